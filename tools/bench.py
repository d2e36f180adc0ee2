"""``omnienc bench``: HF vs omnienc (eager, runtime) vs the GEMM floor, same weights, one run.

Columns (every one measured in the same process, on the same random bf16 weights and inputs):

* ``hf_per_request``: transformers' encoder, one call per request (what engines do today).
* ``hf_batched``: transformers' encoder, one call per modality with all requests concatenated.
* ``native_eager``: omnienc's encoders called directly, one call per modality, everything concatenated.
* ``runtime``: ``EncoderRuntime.encode(requests)`` after ``capture()`` (CUDA graphs on CUDA).
* ``floor``: every Linear of the encoders at the workload's token counts, one CUDA graph (``floor.py``).

Inputs are ``torch.randn`` tensors made once per workload, already on the device (pixel values,
mel features); grids and lengths are on the device for HF (as the Thinker passes them) and on the host
for omnienc (its planning is host-side). Host-to-device copies of inputs are therefore not timed.

The function API: ``run_bench(...) -> dict`` (the JSON report), ``format_markdown(report)``,
``write_outputs(report, out_dir)``; the CLI: ``register(subparsers)`` and ``run(args)``.
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
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

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

COLUMNS = ("hf_per_request", "hf_batched", "native_eager", "runtime", "floor")
WORKLOADS = ("image224", "image448", "image720p", "images8x448", "video16x448", "audio10s", "audio30s",
             "audios8x10s", "mixed32")
MIXED_SEED = 0  # tracegen seed of the mixed32 workload (fixed: the mix is the same in every run)


# --- workloads ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """Requests submitted together: ``("vision", ((t, h, w), ...))`` or ``("audio", (frames, ...))``."""

    name: str
    description: str
    requests: tuple[tuple[str, tuple], ...]

    def items(self, modality: str) -> list:
        """All items of one modality: (t, h, w) grids or frame counts, in request order."""
        return [x for kind, items in self.requests if kind == modality for x in items]

    @property
    def modalities(self) -> list[str]:
        return [m for m in ("vision", "audio") if self.items(m)]

    def summary(self, n_window: int = 50) -> dict:
        frames = self.items("audio")
        chunks, tokens = audio_chunks_tokens(frames, n_window)
        return {
            "requests": len(self.requests),
            "vision_requests": sum(k == "vision" for k, _ in self.requests),
            "audio_requests": sum(k == "audio" for k, _ in self.requests),
            "vision_patches": vision_patches(self.items("vision")),
            "vision_frames": sum(t for t, _, _ in self.items("vision")),
            "audio_clips": len(frames),
            "audio_frames": sum(frames),
            "audio_chunks": chunks,
            "audio_tokens": tokens,
        }


def mixed_requests(n: int = 32, seed: int = MIXED_SEED) -> tuple[tuple[str, tuple], ...]:
    """The first ``n`` requests of ``omnienc tracegen --rate 20 --seed <seed>`` (chat images, short
    videos, speech clips)."""
    from omnienc.tools.tracegen import generate_trace

    seconds = 10.0
    while True:
        records = generate_trace(seconds=seconds, rate=20.0, seed=seed)
        if len(records) >= n:
            break
        seconds *= 2
    return tuple(
        ("vision", tuple(r.grid_thw)) if r.modality == "vision" else ("audio", tuple(r.frames)) for r in records[:n]
    )


def all_workloads() -> dict[str, Workload]:
    """The benchmark's workloads, by name (sizes in patches of 16 px and mel frames of 10 ms)."""
    img = lambda h, w: ("vision", ((1, h, w),))  # noqa: E731
    aud = lambda frames: ("audio", (frames,))  # noqa: E731
    mixed = mixed_requests()
    kinds = [k for k, _ in mixed]
    return {
        w.name: w
        for w in (
            Workload("image224", "1 image 224x224 px, grid [1,14,14]", (img(14, 14),)),
            Workload("image448", "1 image 448x448 px, grid [1,28,28]", (img(28, 28),)),
            Workload("image720p", "1 image 1280x736 px, grid [1,46,80]", (img(46, 80),)),
            Workload("images8x448", "8 requests of 1 image 448x448 px, submitted together", (img(28, 28),) * 8),
            Workload("video16x448", "1 video, 16 frames 448x448 px, grid [8,28,28]", (("vision", ((8, 28, 28),)),)),
            Workload("audio10s", "1 audio clip of 10 s (1000 mel frames)", (aud(1000),)),
            Workload("audio30s", "1 audio clip of 30 s (3000 mel frames)", (aud(3000),)),
            Workload("audios8x10s", "8 requests of one 10 s clip, submitted together", (aud(1000),) * 8),
            Workload(
                "mixed32",
                f"32 concurrent requests from `omnienc tracegen --rate 20 --seed {MIXED_SEED}` "
                f"({kinds.count('vision')} vision: images and videos; {kinds.count('audio')} audio: speech)",
                mixed,
            ),
        )
    }


# --- models and inputs ----------------------------------------------------------------------------


def encoder_configs(tiny: bool):
    """(vision, audio) transformers configs: the released checkpoint's sizes, or tiny ones for CPU tests."""
    from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import (
        Qwen3OmniMoeAudioEncoderConfig,
        Qwen3OmniMoeVisionEncoderConfig,
    )

    if tiny:
        vcfg = Qwen3OmniMoeVisionEncoderConfig(
            depth=4, hidden_size=48, intermediate_size=80, num_heads=4, patch_size=4, temporal_patch_size=2,
            in_channels=3, spatial_merge_size=2, out_hidden_size=40, num_position_embeddings=64,
            deepstack_visual_indexes=[0, 2, 3],
        )
        acfg = Qwen3OmniMoeAudioEncoderConfig(
            num_mel_bins=16, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=64, d_model=32,
            output_dim=24, n_window=50, n_window_infer=200, downsample_hidden_size=8, max_source_positions=1500,
        )
    else:  # class defaults are the checkpoint's, except the Thinker-facing width (3584 -> 2048)
        vcfg = Qwen3OmniMoeVisionEncoderConfig(out_hidden_size=2048)
        acfg = Qwen3OmniMoeAudioEncoderConfig(output_dim=2048)
    vcfg._attn_implementation = "sdpa"
    acfg._attn_implementation = "sdpa"
    return vcfg, acfg


@dataclass
class Models:
    vision_cfg: object
    audio_cfg: object
    hf_vision: torch.nn.Module | None = None
    hf_audio: torch.nn.Module | None = None
    vision: torch.nn.Module | None = None
    audio: torch.nn.Module | None = None


def _build_hf(cls, cfg, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """An HF encoder built directly in ``dtype`` on ``device`` (as ``from_pretrained(dtype=...)`` does:
    parameters in ``dtype``, fp32 buffers such as rotary frequencies stay fp32)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            return cls(cfg).eval()
    finally:
        torch.set_default_dtype(previous)


def build_models(vcfg, acfg, modalities: Sequence[str], device: torch.device, dtype: torch.dtype) -> Models:
    """HF encoders with their random init, and omnienc encoders loaded with the same weights."""
    from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import (
        Qwen3OmniMoeAudioEncoder,
        Qwen3OmniMoeVisionEncoder,
    )

    from omnienc.encoders import AudioEncoder, VisionEncoder, load_hf_weights

    m = Models(vcfg, acfg)
    with torch.no_grad():
        if "vision" in modalities:
            m.hf_vision = _build_hf(Qwen3OmniMoeVisionEncoder, vcfg, device, dtype)
            with torch.device(device):
                m.vision = VisionEncoder(vcfg).to(dtype).eval()
            load_hf_weights(m.vision, m.hf_vision.state_dict())
        if "audio" in modalities:
            m.hf_audio = _build_hf(Qwen3OmniMoeAudioEncoder, acfg, device, dtype)
            with torch.device(device):
                m.audio = AudioEncoder(acfg).to(dtype).eval()
            load_hf_weights(m.audio, m.hf_audio.state_dict())
    return m


@dataclass
class Inputs:
    """One workload's inputs, made once.

    Attributes:
        requests: runtime requests (tensors on the device, grids/lengths on the host).
        hf_calls: one ``(modality, input, grid_thw or feature_lens on the device)`` per request.
        vision: all vision requests concatenated: (pixel_values, grid_thw host, grid_thw device), or None.
        audio: all audio requests concatenated: (input_features, feature_lens host, device), or None.
    """

    requests: list
    hf_calls: list
    vision: tuple | None
    audio: tuple | None


def make_inputs(w: Workload, vcfg, acfg, device: torch.device, dtype: torch.dtype) -> Inputs:
    from omnienc.runtime import AudioRequest, VisionRequest

    in_features = vcfg.in_channels * vcfg.temporal_patch_size * vcfg.patch_size**2
    requests, calls = [], []
    for kind, items in w.requests:
        if kind == "vision":
            grid = torch.tensor(items, dtype=torch.int64)
            px = torch.randn(vision_patches(items), in_features, device=device, dtype=dtype)
            requests.append(VisionRequest(px, grid))
            calls.append(("vision", px, grid.to(device)))
        else:
            lens = torch.tensor(items, dtype=torch.int64)
            feats = torch.randn(acfg.num_mel_bins, sum(items), device=device, dtype=dtype)
            requests.append(AudioRequest(feats, lens))
            calls.append(("audio", feats, lens.to(device)))
    vision = audio = None
    vis = [r for r in requests if isinstance(r, VisionRequest)]
    aud = [r for r in requests if isinstance(r, AudioRequest)]
    if vis:
        grid = torch.cat([r.grid_thw for r in vis])
        vision = (torch.cat([r.pixel_values for r in vis]), grid, grid.to(device))
    if aud:
        lens = torch.cat([r.feature_lens for r in aud])
        audio = (torch.cat([r.input_features for r in aud], dim=1), lens, lens.to(device))
    return Inputs(requests, calls, vision, audio)


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
        warmup: untimed calls first (default 3 on CUDA, 1 on the CPU).
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
            **w.summary(acfg.n_window),
            "floor_gflop": gemm_flops(floor_gemms(w, vcfg, acfg)) / 1e9,
            "results": {},
        }

    bar = tqdm(total=len(cols) * len(chosen), desc="bench", unit="cell", disable=not progress,
               dynamic_ncols=True)

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
                t = timing() if timing is not None else measure(make_fn(), dev, repeats, warmup, budget)
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
    inputs = {n: make_inputs(w, vcfg, acfg, dev, dtype) for n, w in chosen.items()}
    try:
        report["meta"]["parity_rel_err"] = parity(models, inputs)
    except Exception as e:  # informative only
        report["meta"]["parity_rel_err"] = {"error": f"{type(e).__name__}: {e}"}

    # HF first, then free it before omnienc's sections.
    section("hf_per_request", lambda: [cell("hf_per_request", n, lambda: hf_per_request_fn(models, inputs[n]))
                                       for n in chosen])
    section("hf_batched", lambda: [cell("hf_batched", n, lambda: hf_batched_fn(models, inputs[n])) for n in chosen])
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
                report["workloads"][n]["results"]["runtime"] = {"error": "capture failed"}
                bar.update(1)
            return
        for n in chosen:
            try:  # what one encode of this workload does: replays, eager fallbacks, padding
                rt.reset_stats()
                rt.encode(inputs[n].requests)
                report["workloads"][n]["runtime_stats"] = _runtime_summary(rt.stats())
                rt.reset_stats()
            except Exception:
                pass  # the timed cell below reports the error
            cell("runtime", n, lambda: lambda: rt.encode(inputs[n].requests))
            rt.reset_stats()
        rt = None  # frees the graphs and their pool

    section("runtime", runtime_section)
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
        entry["ratios"] = ratios
    return report


def _runtime_summary(stats: dict) -> dict:
    out = {}
    for modality in ("vision", "audio"):
        s = stats.get(modality)
        if s:
            out[modality] = {"replays": s["replays"], "eager_runs": s["eager_runs"], "fallbacks": s["fallbacks"],
                             "padded_share": round(s["padded_share"], 4),
                             "buckets": [k for k, b in s["buckets"].items() if b["runs"]]}
    return out


# --- output ---------------------------------------------------------------------------------------


def _ms(r: dict | None) -> str:
    if not r:
        return "-"
    if "error" in r:
        return "error"
    m, lo, hi = r["median_ms"], r["p10_ms"], r["p90_ms"]
    digits = 2 if m < 10 else 1 if m < 1000 else 0
    return f"{m:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


def _input(e: dict) -> str:
    parts = []
    if e["vision_patches"]:
        parts.append(f"{e['vision_patches']} patches")
    if e["audio_frames"]:
        parts.append(f"{e['audio_frames']} frames ({e['audio_tokens']} tok)")
    return f"{e['requests']} req: " + ", ".join(parts)


def _replays(e: dict) -> str:
    s = e.get("runtime_stats")
    if not s:
        return "-"
    replays = sum(v["replays"] for v in s.values())
    eager = sum(v.get("eager_runs", 0) for v in s.values())
    fallbacks = sum(v["fallbacks"] for v in s.values())
    return f"{replays}" + (f" +{eager} eager runs" if eager else "") + (f" +{fallbacks} fallbacks" if fallbacks else "")


def format_markdown(report: dict) -> str:
    """The report as markdown: context lines, the table, notes."""
    meta, cols = report["meta"], report["columns"]
    lines = ["# omnienc bench", ""]
    lines.append(f"- card: **{meta['card']}** ({meta['device']}); torch {meta['torch']}, "
                 f"transformers {meta['transformers']}; {meta['date']}")
    lines.append(f"- command: `{meta['command']}`")
    params = ", ".join(f"{k} {v:.1f} M params" for k, v in meta.get("params_m", {}).items())
    lines.append(f"- model: {meta['model']} ({params}), {meta['dtype']}, {meta['weights']}")
    par = meta.get("parity_rel_err", {})
    if par and "error" not in par:
        lines.append("- omnienc vs HF output, rel. L2 error on one request: "
                     + ", ".join(f"{k} {v:.2e}" for k, v in par.items()))
    cap = report.get("capture")
    if cap and "error" not in cap:
        lines.append(f"- runtime grid: {meta['grid']} ({cap['graphs']} graphs, lanes: {', '.join(cap['lanes'])}); "
                     f"capture {cap['capture_s']:.1f} s, graph memory {cap['graph_memory_bytes'] / 2**30:.2f} GiB")
    elif cap:
        lines.append(f"- runtime grid: {meta['grid']}: capture failed ({cap['error']})")
    budget = f"; slow cells fewer so a cell takes ~{meta['cell_budget_s']:g} s, at least 5" if meta["cell_budget_s"] else ""
    lines.append(f"- timing: ms per workload, median (p10-p90) over up to {meta['repeats']} calls after "
                 f"{meta['warmup']} warm-up{budget}")
    lines.append("")
    ratio_cols = []
    if "runtime" in cols and "hf_per_request" in cols:
        ratio_cols.append(("speedup_vs_hf_per_request", "runtime speed-up vs hf_per_request", "x"))
    if "runtime" in cols and "floor" in cols:
        ratio_cols.append(("runtime_over_floor", "runtime / floor", "x"))
    header = ["workload", "input"] + cols + [label for _, label, _ in ratio_cols]
    if "runtime" in cols:
        header.append("runtime replays")
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for name, e in report["workloads"].items():
        row = [name, _input(e)] + [_ms(e["results"].get(c)) for c in cols]
        for key, _, unit in ratio_cols:
            v = e.get("ratios", {}).get(key)
            row.append(f"{v:.1f}{unit}" if v is not None else "-")
        if "runtime" in cols:
            row.append(_replays(e))
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Notes:"]
    lines.append("- Inputs are random (`torch.randn`), made once per workload and already on the device; "
                 "host-to-device copies of pixel values / mel features are not timed. HF gets `grid_thw` / "
                 "`feature_lens` on the device (as the Thinker passes them); omnienc gets them on the host.")
    lines.append("- hf_per_request: one HF call per request; hf_batched and native_eager: one call per modality "
                 "with all requests concatenated (HF's batched audio output differs slightly from per-request: "
                 "it pads every chunk to the call's longest); runtime: `EncoderRuntime.encode(all requests)` "
                 "after capture, validation, packing, planning, copies into the graph buffers and output "
                 "slicing included.")
    lines.append("- floor: every Linear of the encoders at the workload's token counts (vision: patch embed, "
                 "qkv/proj/fc1/fc2 per block, 4 mergers at N/4 rows; audio: conv_out at 13 rows per chunk, "
                 "qkv (stacked)/out/fc1/fc2 per layer, proj1/proj2), bf16 random operands, one CUDA graph (on the CPU: "
                 "eager). Attention, norms, activations and the audio convolutions are not in it.")
    lines.append("- CUDA timing: each call starts on an idle GPU and is bracketed by CUDA events. Only figures "
                 "of one run on one card compare.")
    if report["errors"]:
        lines += ["", "Errors:"] + [f"- {err}" for err in report["errors"]]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> bool:
    """Bar chart of median ms per workload per column (log scale); False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names, cols = list(report["workloads"]), report["columns"]
    width = 0.8 / max(len(cols), 1)
    fig, ax = plt.subplots(figsize=(max(8, 1.3 * len(names)), 5))
    for i, c in enumerate(cols):
        xs, ys = [], []
        for j, n in enumerate(names):
            r = report["workloads"][n]["results"].get(c, {})
            if r.get("median_ms", 0) > 0:
                xs.append(j + (i - (len(cols) - 1) / 2) * width)
                ys.append(r["median_ms"])
        ax.bar(xs, ys, width, label=c)
    ax.set_yscale("log")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("ms per workload (median)")
    meta = report["meta"]
    ax.set_title(f"omnienc bench: {meta['card']}, torch {meta['torch']}, {meta['date'][:10]}", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_outputs(report: dict, out_dir: str | Path) -> dict[str, Path]:
    """Writes ``bench.md``, ``bench.json`` and (with matplotlib) ``bench.png``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "bench.md", "json": out / "bench.json"}
    paths["md"].write_text(format_markdown(report), encoding="utf-8")
    paths["json"].write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    try:
        if plot(report, out / "bench.png"):
            paths["png"] = out / "bench.png"
        else:
            print("omnienc bench: matplotlib is not installed; skipped bench.png", file=sys.stderr)
    except Exception as e:  # a plot must not lose the measurements
        print(f"omnienc bench: could not plot ({type(e).__name__}: {e}); skipped bench.png", file=sys.stderr)
    return paths


# --- command line ---------------------------------------------------------------------------------


def _names(text: str | None) -> list[str] | None:
    return [s.strip() for s in text.split(",") if s.strip()] if text else None


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Adds the ``bench`` subcommand; its ``func`` default is :func:`run`."""
    p = subparsers.add_parser(
        "bench", help="benchmark HF vs omnienc (eager, runtime) vs the GEMM floor",
        description="Time transformers' Qwen3-Omni encoders (per request and batched), omnienc's eager "
        "encoders, the CUDA-graph runtime and the GEMM floor on fixed workloads, same random bf16 weights, "
        "one run. Writes a markdown table (stdout and bench.md), bench.json and bench.png.")
    p.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda if available")
    p.add_argument("--tiny", action="store_true", help="tiny encoder configs (CPU tests)")
    p.add_argument("--workloads", default=None, help=f"comma list (default all): {','.join(WORKLOADS)}")
    p.add_argument("--columns", default=None, help=f"comma list (default all): {','.join(COLUMNS)}")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per cell (default 30 on CUDA, 5 on CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls per cell (default 3 on CUDA, 1 on CPU)")
    p.add_argument("--cell-budget", type=float, default=6.0,
                   help="seconds: slow cells get fewer repeats (at least 5) so each takes about this long "
                   "(default 6; 0: always --repeats)")
    p.add_argument("--grid", default=None, help="YAML bucket grid for the runtime (default: packaged grid)")
    p.add_argument("--out", default=None, help="folder for bench.md, bench.json, bench.png")
    p.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
    p.add_argument("--seed", type=int, default=0, help="seed of weights and inputs (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Runs ``omnienc bench``; returns 0, 1 if some cell failed (see Errors), 2 on bad input."""
    from omnienc.runtime.grid import BucketGrid

    try:
        grid = BucketGrid.default() if args.grid is None else BucketGrid.from_yaml(args.grid)
        report = run_bench(
            device=args.device, tiny=args.tiny, workloads=_names(args.workloads), columns=_names(args.columns),
            repeats=args.repeats, warmup=args.warmup, cell_budget_s=args.cell_budget, grid=grid,
            grid_name=args.grid or "default (omnienc/configs/qwen3_omni.yaml)",
            progress=not getattr(args, "no_progress", False), seed=args.seed,
        )
    except ValueError as e:  # GridError, bad names or device
        print(f"omnienc bench: error: {e}", file=sys.stderr)
        return 2
    if args.out:
        write_outputs(report, args.out)
    print(json.dumps(report, indent=2) if args.json else format_markdown(report))
    return 1 if report["errors"] else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m omnienc.tools.bench [options]`` (the same as ``omnienc bench``)."""
    parser = argparse.ArgumentParser(prog="omnienc")
    register(parser.add_subparsers())
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


__all__ = [
    "COLUMNS",
    "WORKLOADS",
    "Workload",
    "all_workloads",
    "encoder_configs",
    "format_markdown",
    "make_inputs",
    "register",
    "run",
    "run_bench",
    "write_outputs",
]


if __name__ == "__main__":
    sys.exit(main())
