"""``omnienc bench``: HF vs omnienc (eager, runtime) vs the GEMM floor, same weights, one run.

Columns (every one measured in the same process, on the same random bf16 weights and inputs):

* ``hf_per_request``: transformers' encoder, one call per request (what engines do today).
* ``hf_batched``: transformers' encoder, one call per modality with all requests concatenated.
* ``native_eager``: omnienc's encoders called directly, one call per modality, everything concatenated.
* ``runtime``: ``EncoderRuntime.encode(requests)`` after ``capture()`` (CUDA graphs on CUDA).
* ``floor``: every Linear of the encoders at the workload's token counts, one CUDA graph (``floor.py``).

Raw workloads (``raw_image448``, ``raw_audio10s``, ``raw_mixed32``: the requests of ``image448``,
``audio10s`` and ``mixed32`` as raw media in host memory, ``workloads.raw_items``) add columns that
start from the raw media (``workloads.transformers_preprocess``, ``workloads.omnienc_preprocess``);
on them ``runtime`` encodes the ready
inputs (those media preprocessed on the device, float32):

* ``raw_hf``: transformers' CPU processors, then transformers' encoder, one request at a time (what
  engines do today).
* ``raw_cpu_runtime``: transformers' CPU processors for every request, then one ``EncoderRuntime.encode``.
* ``raw_gpu_runtime``: ``preprocess_requests`` on the device (all requests in one pass; a one-request
  workload replays its preprocessing graph after the first calls, a many-request mix runs kernel by
  kernel, as a never-repeating mix would), then the same encode. ``raw_gpu_runtime / runtime`` is
  the raw-to-embeddings ratio (targets in ``RAW_TARGETS``).
* ``pre_cpu`` / ``pre_gpu``: the preprocessing alone, transformers' CPU processors vs
  ``preprocess_requests`` on the device.

Inputs are ``torch.randn`` tensors made once per workload, already on the device (pixel values,
mel features); grids and lengths are on the device for HF (as the Thinker passes them) and on the host
for omnienc (its planning is host-side). Host-to-device copies of inputs are therefore not timed.

The function API: ``run_bench(...) -> dict`` (the JSON report); the CLI: ``register(subparsers)`` and
``run(args)``. The workloads are in ``workloads.py``, the models in ``models.py``, the timing loop and
the GEMM floor in ``floor.py``, the markdown, plot and files in ``report.py``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import platform
import shlex
import sys
import time
import traceback
from collections.abc import Callable, Sequence

import torch

from omnienc.tools.floor import (
    Timing,
    audio_chunks_tokens,
    audio_gemms,
    gemm_flops,
    measure,
    time_gemms,
    vision_gemms,
    vision_patches,
)
from omnienc.tools.models import Models, build_models, encoder_configs
from omnienc.tools.report import RAW_COLUMNS, format_markdown, write_outputs  # RAW_COLUMNS: raw workloads only
from omnienc.tools.workloads import (
    NEVER_REPEATED,
    WORKLOADS,
    Inputs,
    Workload,
    all_workloads,
    make_inputs,
    omnienc_preprocess,
    preprocess_config,
    transformers_preprocess,
)

from omnienc.tools.bench import COLUMNS, RAW_TARGETS, _names  # noqa: E402 - the command's light half


# --- the columns: each returns a callable doing the workload once ---------------------------------


def hf_per_request_fn(m: Models, x: Inputs) -> Callable[[], None]:
    def fn():
        for kind, data, meta in x.hf_calls:
            if kind == "vision":
                m.hf_vision(data, grid_thw=meta)
            else:
                m.hf_audio(data, feature_lens=meta)

    return fn


def hf_batched_fn(m: Models, x: Inputs) -> Callable[[], None]:
    def fn():
        if x.vision is not None:
            m.hf_vision(x.vision[0], grid_thw=x.vision[2])
        if x.audio is not None:
            m.hf_audio(x.audio[0], feature_lens=x.audio[2])

    return fn


def native_eager_fn(m: Models, x: Inputs) -> Callable[[], None]:
    def fn():
        if x.vision is not None:
            m.vision(x.vision[0], x.vision[1])
        if x.audio is not None:
            m.audio(x.audio[0], x.audio[1])

    return fn


def raw_hf_fn(m: Models, pre: Callable[[], list], device: torch.device, dtype: torch.dtype) -> Callable[[], None]:
    """transformers' CPU processor, then transformers' encoder, request by request."""
    def fn():
        for kind, data, meta in pre():
            data = data.to(device, dtype)
            if kind == "vision":
                m.hf_vision(data, grid_thw=meta.to(device))
            else:
                m.hf_audio(data, feature_lens=meta.to(device))

    return fn


def raw_cpu_runtime_fn(rt, pre: Callable[[], list], device: torch.device) -> Callable[[], None]:
    """transformers' CPU processor for every request, then one runtime encode."""
    from omnienc.runtime import AudioRequest, VisionRequest

    def fn():
        reqs = [VisionRequest(d.to(device, non_blocking=True), m) if k == "vision"
                else AudioRequest(d.to(device, non_blocking=True), m) for k, d, m in pre()]
        rt.encode(reqs)

    return fn


def floor_gemms(w: Workload, vcfg, acfg) -> list:
    """The GEMMs of every encoder the workload uses, vision first (one pass per modality)."""
    gemms = []
    if "vision" in w.modalities:
        gemms += vision_gemms(vcfg, vision_patches(w.items("vision")))
    if "audio" in w.modalities:
        gemms += audio_gemms(acfg, *audio_chunks_tokens(w.items("audio"), acfg.n_window))
    return gemms


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def parity(m: Models, inputs: dict[str, Inputs]) -> dict:
    """Relative L2 error of omnienc's eager output against HF's on the first request of each modality
    (both bf16, same weights): evidence the columns run the same model."""
    out = {}
    with torch.inference_mode():
        for x in inputs.values():
            for r, (kind, data, meta) in zip(x.requests, x.hf_calls):
                if kind in out:
                    continue
                if kind == "vision":
                    ref = m.hf_vision(data, grid_thw=meta)
                    got, ds = m.vision(data, r.grid_thw)
                    out[kind] = max([_rel_err(got, ref.pooler_output)]
                                    + [_rel_err(a, b) for a, b in zip(ds, ref.deepstack_features)])
                else:
                    ref = m.hf_audio(data, feature_lens=meta).last_hidden_state
                    out[kind] = _rel_err(m.audio(data, r.feature_lens), ref)
    return out


# --- the run --------------------------------------------------------------------------------------


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def _card(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def _command_line() -> str:
    argv = list(sys.argv)
    if argv and argv[0].endswith(("cli.py", "__main__.py")):
        argv[0] = "python -m omnienc.tools.cli"
    elif argv and argv[0].endswith("bench.py"):
        argv[0] = "python -m omnienc.tools.bench"
    elif argv:
        argv[0] = os.path.basename(argv[0])
    return " ".join([argv[0]] + [shlex.quote(a) for a in argv[1:]]) if argv else ""


def resolve_device(device: str | None) -> torch.device:
    """``cuda`` (as ``cuda:<current>``, the form encoders report) or ``cpu``; default: cuda if available."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is available; pass --device cpu (with --tiny)")
        dev = torch.device("cuda", dev.index if dev.index is not None else torch.cuda.current_device())
    elif dev.type != "cpu":
        raise ValueError(f"--device {device!r}: use 'cuda' or 'cpu'")
    return dev


def run_bench(
    device: str | torch.device | None = None,
    tiny: bool = False,
    workloads: Sequence[str] | None = None,
    columns: Sequence[str] | None = None,
    repeats: int | None = None,
    warmup: int | None = None,
    cell_budget_s: float | None = 6.0,
    grid=None,
    grid_name: str = "default",
    progress: bool = True,
    seed: int = 0,
    command: str | None = None,
) -> dict:
    """Measures every column on every workload; returns the report (what ``bench.json`` holds).

    Args:
        device: ``"cuda"`` or ``"cpu"`` (default: cuda if available).
        tiny: tiny configs (CPU tests); default: the released checkpoint's sizes.
        workloads, columns: subsets by name (default: all, in the canonical order).
        repeats: timed calls per cell (default 30 on CUDA, 5 on the CPU).
        warmup: untimed calls first (default 3 on CUDA, 1 on the CPU; a slow cell stops warming up
            once it took a quarter of its budget). Given, every one of them runs (a steady state that
            needs so many calls, e.g. dense attention admitted at a shape's 8th sighting).
        cell_budget_s: slow cells get fewer repeats so each takes about this long (at least 5);
            None or 0: always ``repeats``.
        grid: the runtime's ``BucketGrid`` (default ``BucketGrid.default()``).
    """
    from tqdm import tqdm

    from omnienc.runtime import BucketGrid, EncoderRuntime

    dev = resolve_device(str(device) if device is not None else None)
    cuda = dev.type == "cuda"
    all_w = all_workloads()
    names = list(workloads) if workloads else list(all_w)
    cols = [c for c in COLUMNS if c in columns] if columns else list(COLUMNS)
    bad = [n for n in names if n not in all_w] + [c for c in (columns or []) if c not in COLUMNS]
    if bad:
        raise ValueError(f"unknown workload(s)/column(s) {bad}; workloads: {list(all_w)}; columns: {list(COLUMNS)}")
    repeats = repeats if repeats is not None else (30 if cuda else 5)
    full_warmup = warmup is not None
    warmup = warmup if warmup is not None else (3 if cuda else 1)
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    budget = cell_budget_s or None
    grid = grid or BucketGrid.default()
    dtype = torch.bfloat16
    torch.manual_seed(seed)

    vcfg, acfg = encoder_configs(tiny)
    chosen = {n: all_w[n] for n in names}
    modalities = [m for m in ("vision", "audio") if any(m in w.modalities for w in chosen.values())]
    report: dict = {
        "meta": {
            "card": _card(dev),
            "device": str(dev),
            "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
            "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": command if command is not None else _command_line(),
            "model": "tiny test configs" if tiny else "Qwen3-Omni-30B-A3B encoder sizes",
            "dtype": "bfloat16",
            "weights": "random (HF init; omnienc loads HF's state_dict)",
            "repeats": repeats,
            "warmup": warmup,
            "full_warmup": full_warmup,
            "cell_budget_s": budget,
            "grid": grid_name,
            "grid_buckets": grid.to_dict(),
        },
        "columns": cols,
        "workloads": {},
        "sections": {},
        "errors": [],
    }
    for name, w in chosen.items():
        report["workloads"][name] = {
            "description": w.description,
            "raw": w.raw,
            "raw_target": RAW_TARGETS.get(name) if not tiny else None,
            **w.summary(acfg.n_window),
            "floor_gflop": gemm_flops(floor_gemms(w, vcfg, acfg)) / 1e9,
            "results": {},
        }

    cells = sum(len(cols) if w.raw else len([c for c in cols if c not in RAW_COLUMNS]) for w in chosen.values())
    bar = tqdm(total=cells, desc="bench", unit="cell", disable=not progress, dynamic_ncols=True)

    def fail(where: str, e: Exception) -> str:
        msg = f"{type(e).__name__}: {e}".splitlines()[0][:300]
        report["errors"].append(f"{where}: {msg}")
        traceback.print_exc(file=sys.stderr)
        _free(dev)
        return msg

    def cell(col: str, name: str, make_fn: Callable[[], Callable[[], object]] | None = None,
             timing: Callable[[], Timing] | None = None) -> None:
        bar.set_postfix_str(f"{col} {name}")
        try:
            with torch.inference_mode():
                t = timing() if timing is not None else measure(make_fn(), dev, repeats, warmup, budget, full_warmup=full_warmup)
            report["workloads"][name]["results"][col] = t.to_dict()
        except Exception as e:  # keep measuring the other cells; the report lists the failure
            report["workloads"][name]["results"][col] = {"error": fail(f"{col} / {name}", e)}
        bar.update(1)

    def section(col: str, body: Callable[[], None]) -> None:
        if col not in cols:
            return
        if cuda:
            torch.cuda.reset_peak_memory_stats(dev)
        try:
            body()
        except Exception as e:  # cells catch their own errors; this is a failure around them
            fail(col, e)
        if cuda:
            report["sections"].setdefault(col, {})["peak_memory_bytes"] = torch.cuda.max_memory_allocated(dev)

    models = build_models(vcfg, acfg, modalities, dev, dtype)
    report["meta"]["params_m"] = {k: sum(p.numel() for p in v.parameters()) / 1e6
                                  for k, v in (("vision", models.vision), ("audio", models.audio)) if v is not None}
    inputs = {n: make_inputs(w, vcfg, acfg, dev, dtype, seed) for n, w in chosen.items()}
    pcfg = preprocess_config(vcfg, acfg)
    raw_names = [n for n, w in chosen.items() if w.raw]
    hf_pre = {n: transformers_preprocess(inputs[n].raw, pcfg) for n in raw_names}
    # A mix of many requests never repeats in serving: no preprocessing graph for it (see report.py).
    gpu_pre = {n: omnienc_preprocess(inputs[n].raw, pcfg, dev, graphs=None if len(inputs[n].raw) == 1 else False)
               for n in raw_names}
    try:
        report["meta"]["parity_rel_err"] = parity(models, inputs)
    except Exception as e:  # informative only
        report["meta"]["parity_rel_err"] = {"error": f"{type(e).__name__}: {e}"}

    # HF first, then free it before omnienc's sections.
    section("hf_per_request", lambda: [cell("hf_per_request", n, lambda: hf_per_request_fn(models, inputs[n]))
                                       for n in chosen])
    section("hf_batched", lambda: [cell("hf_batched", n, lambda: hf_batched_fn(models, inputs[n])) for n in chosen])
    section("raw_hf", lambda: [cell("raw_hf", n, lambda: raw_hf_fn(models, hf_pre[n], dev, dtype)) for n in raw_names])
    section("pre_cpu", lambda: [cell("pre_cpu", n, lambda: hf_pre[n]) for n in raw_names])
    section("pre_gpu", lambda: [cell("pre_gpu", n, lambda: gpu_pre[n]) for n in raw_names])
    models.hf_vision = models.hf_audio = None
    _free(dev)
    section("native_eager", lambda: [cell("native_eager", n, lambda: native_eager_fn(models, inputs[n]))
                                     for n in chosen])

    def runtime_section() -> None:
        try:
            rt = EncoderRuntime(vision=models.vision, audio=models.audio, grid=grid)
            with torch.inference_mode():
                report["capture"] = {**rt.capture(progress=progress), "lanes": [lane.modality for lane in rt.lanes()]}
        except Exception as e:
            report["capture"] = {"error": fail("runtime capture", e)}
            for n in chosen:
                for c in ("runtime", "raw_cpu_runtime", "raw_gpu_runtime"):
                    if c in cols and (c == "runtime" or n in raw_names):
                        report["workloads"][n]["results"][c] = {"error": "capture failed"}
                        bar.update(1)
            return
        exact = rt.exact_graphs
        for n in chosen:
            if exact:
                rt.exact_graphs = n not in NEVER_REPEATED
            try:  # what one encode of this workload does: replays, eager fallbacks, padding
                rt.reset_stats()
                rt.encode(inputs[n].requests)
                report["workloads"][n]["runtime_stats"] = _runtime_summary(rt.stats())
                rt.reset_stats()
            except Exception:
                pass  # the timed cell below reports the error
            if "runtime" in cols:
                cell("runtime", n, lambda: lambda: rt.encode(inputs[n].requests))
                # The timed calls repeat one layout: from its second sighting an exact graph replays.
                report["workloads"][n]["runtime_timed_stats"] = _runtime_summary(rt.stats())
            if n in raw_names:
                if "raw_cpu_runtime" in cols:
                    cell("raw_cpu_runtime", n, lambda: raw_cpu_runtime_fn(rt, hf_pre[n], dev))
                if "raw_gpu_runtime" in cols:
                    cell("raw_gpu_runtime", n, lambda: lambda: rt.encode(gpu_pre[n]()))
            try:
                report["workloads"][n]["runtime_enqueue_ms"] = enqueue_ms(rt, inputs[n].requests, dev)
            except Exception as e:  # informative only
                report["errors"].append(f"runtime enqueue / {n}: {type(e).__name__}: {e}")
            rt.reset_stats()
        rt = None  # frees the graphs and their pool

    if any(c in cols for c in ("runtime", "raw_cpu_runtime", "raw_gpu_runtime")):
        section("runtime" if "runtime" in cols else "raw_gpu_runtime", runtime_section)
    models.vision = models.audio = None
    _free(dev)
    section("floor", lambda: [cell("floor", n, timing=lambda: time_gemms(
        floor_gemms(chosen[n], vcfg, acfg), dev, repeats, warmup, budget)) for n in chosen])
    bar.close()
    inputs.clear()  # free the input tensors
    _free(dev)

    for entry in report["workloads"].values():
        r = entry["results"]
        med = {c: r[c]["median_ms"] for c in r if "median_ms" in r[c]}
        ratios = {}
        if "runtime" in med and "hf_per_request" in med and med["runtime"] > 0:
            ratios["speedup_vs_hf_per_request"] = med["hf_per_request"] / med["runtime"]
        if "runtime" in med and "floor" in med and med["floor"] > 0:
            ratios["runtime_over_floor"] = med["runtime"] / med["floor"]
        if "floor" in med and med["floor"] > 0:
            ratios["floor_tflops"] = entry["floor_gflop"] / med["floor"]  # GFLOP / ms = TFLOP/s
        if "raw_gpu_runtime" in med and "runtime" in med and med["runtime"] > 0:
            ratios["raw_over_ready"] = med["raw_gpu_runtime"] / med["runtime"]
        if "raw_gpu_runtime" in med and "raw_hf" in med and med["raw_gpu_runtime"] > 0:
            ratios["raw_speedup_vs_hf"] = med["raw_hf"] / med["raw_gpu_runtime"]
        entry["ratios"] = ratios
    return report


def enqueue_ms(rt, requests, device: torch.device, repeats: int = 21) -> float:
    """Median host time (ms) of ``rt.launch(requests)`` on an idle device: validation, packing,
    staging and enqueuing, without waiting for the GPU (on the CPU the work itself is included)."""
    times = []
    with torch.inference_mode():
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            batch = rt.launch(requests)
            times.append((time.perf_counter() - t0) * 1e3)
            batch.wait()
    return sorted(times)[len(times) // 2]


def _runtime_summary(stats: dict) -> dict:
    out = {}
    for modality in ("vision", "audio"):
        s = stats.get(modality)
        if s:
            out[modality] = {"replays": s["replays"], "eager_runs": s["eager_runs"], "fallbacks": s["fallbacks"],
                             "eager_merges": s.get("eager_merges", 0),
                             "exact_replays": s["exact_replays"], "padded_share": round(s["padded_share"], 4),
                             "buckets": [k for k, b in s["buckets"].items() if b["runs"]]}
    return out


# --- command line ---------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    """Runs ``omnienc bench``; returns 0, 1 if some cell failed (see Errors), 2 on bad input."""
    from omnienc.runtime.grid import BucketGrid
    from omnienc.tools.models import device_context, parse_devices

    try:
        devices = None
        if getattr(args, "devices", None) is not None:
            if args.device is not None:
                raise ValueError(f"give --device or --devices, not both (got --device {args.device} "
                                 f"--devices {args.devices})")
            devices = [f"cuda:{i}" for i in parse_devices(args.devices)]
        elif getattr(args, "service_requests", None) is not None:
            raise ValueError("--service-requests needs --devices")
        grid_name = args.grid or "default (omnienc/configs/qwen3_omni.yaml)"
        grid = BucketGrid.default() if args.grid is None else BucketGrid.from_yaml(args.grid)
        with device_context(devices[0] if devices else "cpu"):
            report = run_bench(
                device=devices[0] if devices else args.device, tiny=args.tiny, workloads=_names(args.workloads),
                columns=_names(args.columns), repeats=args.repeats, warmup=args.warmup,
                cell_budget_s=args.cell_budget, grid=grid, grid_name=grid_name,
                progress=not getattr(args, "no_progress", False), seed=args.seed,
            )
    except ValueError as e:  # GridError, bad names or device
        print(f"omnienc bench: error: {e}", file=sys.stderr)
        return 2
    if devices:
        report["service"] = service_throughput(devices, args, grid, grid_name)
        report["errors"] += [f"service {e}" for e in report["service"].get("errors", [])]
    if args.out:
        write_outputs(report, args.out)
    print(json.dumps(report, indent=2) if args.json else format_markdown(report))
    return 1 if report["errors"] else 0


def service_throughput(devices: list[str], args: argparse.Namespace, grid, grid_name: str) -> dict:
    """The throughput workload over ``devices`` (``service_load.run_service_bench``); a failure is
    reported in the result's ``errors``, not raised."""
    from omnienc.tools import service_load

    _free(torch.device(devices[0]))
    try:
        return service_load.run_service_bench(
            devices=devices, requests=args.service_requests, tiny=args.tiny, parts=("throughput",), grid=grid,
            grid_name=grid_name, seed=args.seed, command=_command_line(), log=lambda s: print(s, file=sys.stderr))
    except Exception as e:  # noqa: BLE001 - the columns' figures are kept
        traceback.print_exc(file=sys.stderr)
        return {"errors": [f"throughput: {type(e).__name__}: {e}".splitlines()[0][:300]]}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m omnienc.tools.bench [options]`` (the same as ``omnienc bench``)."""
    from omnienc.tools.bench import register

    parser = argparse.ArgumentParser(prog="omnienc")
    register(parser.add_subparsers())
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


__all__ = ["resolve_device", "run", "run_bench"]


if __name__ == "__main__":
    sys.exit(main())
