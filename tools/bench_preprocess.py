"""Preprocessing benchmark: raw inputs in memory -> encoder inputs, and raw inputs -> embeddings.

    python -m omnienc.tools.bench_preprocess [--device cuda] [--repeats 50] [--warmup 10]
        [--workloads image448,audio30s] [--no-e2e] [--tiny] [--out results.json]

Workloads (made once with fresh random content, in host memory, as an engine holds media after
decoding): ``image448`` (uint8 448x448x3), ``image720p`` (uint8 720x1280x3, resized to 704x1280),
``audio10s`` / ``audio30s`` (float32 at 16 kHz), ``audio30s44k`` (float32 at 44.1 kHz, resampled).

Preprocessing columns (median ms per call after warm-up):

* ``hf_cpu``: transformers' ``Qwen2VLImageProcessorPil`` / ``WhisperFeatureExtractor`` on the CPU, as
  Qwen3-Omni configures them (44.1 kHz: ``scipy.signal.resample_poly`` first; transformers has no
  resampler).
* ``ours_cpu``: ``omnienc.preprocess`` on the CPU.
* ``ours_gpu``: ``omnienc.preprocess`` on CUDA from the host inputs (the host-to-device copy counts).
* ``ours_gpu_resident``: the same with the raw inputs already on the GPU.

End to end (``--no-e2e`` skips it; CUDA, random bf16 weights at the real sizes via
``tools/models.py``, the default grid captured): ``encode_ready`` is ``EncoderRuntime.encode`` of
inputs already preprocessed on the GPU, ``raw_to_embeds`` is ``from_images`` / ``from_waveforms`` on
the GPU from the host raw input plus the same encode; ``ratio`` = raw_to_embeds / encode_ready.

CUDA timing: every call starts on an idle device, is bracketed by CUDA events and waited for, so
host work that keeps the GPU waiting (launches, copies from pageable memory) counts. CPU: wall clock.
``--tiny`` shrinks every input (and runs the end to end part with reduced model sizes) for a smoke run.

Function API: ``run_preprocess_bench(device, repeats, ...) -> dict`` (the JSON report) and
``format_markdown(report)``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

WORKLOADS = ("image448", "image720p", "audio10s", "audio30s", "audio30s44k")
# Issue #13's targets on an H200: GPU preprocessing alone (ms) and raw-to-embeddings ratios.
TARGET_MS = {"image448": 0.3, "image720p": 0.6, "audio30s": 0.5, "audio30s44k": 0.8}
TARGET_RATIO = {"image448": 1.15, "audio10s": 1.2}
E2E = ("image448", "audio10s")


def workload_specs(tiny: bool = False) -> dict[str, tuple]:
    """``name -> ("image", (H, W))`` or ``("audio", (seconds, rate))``."""
    if tiny:
        return {"image448": ("image", (64, 64)), "image720p": ("image", (72, 128)), "audio10s": ("audio", (0.5, 16000)),
                "audio30s": ("audio", (1.0, 16000)), "audio30s44k": ("audio", (1.0, 44100))}
    return {"image448": ("image", (448, 448)), "image720p": ("image", (720, 1280)), "audio10s": ("audio", (10, 16000)),
            "audio30s": ("audio", (30, 16000)), "audio30s44k": ("audio", (30, 44100))}


def make_input(kind: str, size: tuple, rng: np.random.Generator):
    """Fresh random raw input: uint8 ``[H, W, 3]`` or float32 ``[samples]`` in [-1, 1]."""
    if kind == "image":
        return rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    seconds, rate = size
    return (0.1 * rng.standard_normal(round(seconds * rate))).astype(np.float32)


def measure(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int) -> dict:
    """Median, p10, p90, mean and min of ``fn``'s time in ms: ``floor.measure``, every repeat."""
    from omnienc.tools.floor import measure as timed

    return timed(fn, device, repeats, warmup, None).to_dict()


def _hf_fn(kind: str, size: tuple, x, cfg) -> Callable[[], object] | None:
    from omnienc.preprocess import make_feature_extractor, make_image_processor, whisper_features

    if kind == "image":
        proc = make_image_processor(cfg, cfg.min_pixels, cfg.max_pixels)
        return lambda: proc(images=[x], return_tensors="pt")
    fe = make_feature_extractor(cfg)
    rate = size[1]
    if rate == cfg.sampling_rate:
        return lambda: whisper_features(fe, x)
    try:
        from math import gcd

        from scipy.signal import resample_poly
    except ImportError:
        return None
    g = gcd(cfg.sampling_rate, rate)
    return lambda: whisper_features(fe, resample_poly(x, cfg.sampling_rate // g, rate // g).astype(np.float32))


def _ours_fn(kind: str, size: tuple, x, cfg, device: torch.device) -> Callable[[], object]:
    from omnienc.preprocess import preprocess_images, preprocess_waveforms

    if kind == "image":
        return lambda: preprocess_images([x], cfg, device=device)
    return lambda: preprocess_waveforms([x], size[1], cfg, device=device)


def _e2e(name: str, kind: str, size: tuple, x_host: np.ndarray, device: torch.device, repeats: int, warmup: int,
         runtime, cfg) -> dict:
    from omnienc.runtime import AudioRequest, VisionRequest

    if kind == "image":
        def make():
            return VisionRequest.from_images([torch.from_numpy(x_host)], device=device, config=cfg)
    else:
        def make():
            return AudioRequest.from_waveforms([x_host], size[1], device=device, config=cfg)
    ready = make()  # preprocessed once: the runtime's input as an engine would hand it over
    encode_ready = measure(lambda: runtime.encode([ready]), device, repeats, warmup)
    raw_to_embeds = measure(lambda: runtime.encode([make()]), device, repeats, warmup)
    return {"encode_ready": encode_ready, "raw_to_embeds": raw_to_embeds,
            "ratio": raw_to_embeds["median_ms"] / encode_ready["median_ms"], "target_ratio": TARGET_RATIO.get(name)}


def _build_runtime(device: torch.device, tiny: bool):
    from omnienc.preprocess import PreprocessConfig
    from omnienc.runtime import BucketGrid, EncoderRuntime
    from omnienc.tools.models import build_encoders

    sizes = "reduced" if tiny or device.type != "cuda" else "real"
    dtype = "bfloat16" if device.type == "cuda" else "float32"
    vis, aud = build_encoders(None, device=device, dtype=dtype, sizes=sizes)
    grid = BucketGrid.default()
    if device.type != "cuda":
        grid = BucketGrid.from_dict({"dtype": "float32", "vision": {"patches": [256, 1024], "batch": [1, 2]},
                                     "audio": {"frames": [200, 1000], "batch": [1, 2]}})
    rt = EncoderRuntime(vision=vis, audio=aud, grid=grid, device=device)
    if rt.use_cuda_graphs:
        rt.capture(progress=False)
    return rt, PreprocessConfig.from_configs(vis.config, aud.config), sizes, dtype


def _resolve(device) -> torch.device:
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda: no CUDA device is available; pass --device cpu")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def run_preprocess_bench(device=None, repeats: int = 50, warmup: int = 10, workloads: Sequence[str] | None = None,
                         e2e: bool = True, tiny: bool = False, hf: bool = True, seed: int | None = None) -> dict:
    """Times preprocessing from raw inputs (and, with ``e2e``, raw inputs to embeddings).

    Args:
        device: the accelerator for the ``ours_gpu`` columns (default cuda if available); on a CPU
            those columns are left out and ``e2e`` runs on the CPU with reduced sizes.
        repeats, warmup: timed and untimed calls per cell.
        workloads: names from ``WORKLOADS`` (default all).
        tiny: small inputs and reduced model sizes, for a smoke run.
        hf: time transformers' processors too.

    Returns:
        The JSON report: ``workloads[name]`` with ``hf_cpu``, ``ours_cpu``, ``ours_gpu``,
        ``ours_gpu_resident`` timings (each ``{"median_ms", ...}`` or None) and ``target_ms``;
        ``e2e[name]`` with ``encode_ready``, ``raw_to_embeds``, ``ratio``, ``target_ratio``.
    """
    from omnienc.preprocess import PreprocessConfig

    dev = _resolve(device)
    names = list(workloads or WORKLOADS)
    specs = workload_specs(tiny)
    for n in names:
        if n not in specs:
            raise ValueError(f"workload {n!r}: choose from {', '.join(WORKLOADS)}")
    rng = np.random.default_rng(seed)
    cfg = PreprocessConfig()
    cpu = torch.device("cpu")
    inputs = {n: make_input(*specs[n], rng) for n in names}
    card = (torch.cuda.get_device_name(dev) if dev.type == "cuda"
            else f"CPU {platform.machine()} ({os.cpu_count()} cores)")
    command = " ".join(["python -m omnienc.tools.bench_preprocess", *sys.argv[1:]]) if __name__ == "__main__" else None
    report: dict = {
        "card": card, "date": _dt.datetime.now().isoformat(timespec="seconds"), "torch": torch.__version__,
        "command": command,
        "device": str(dev), "repeats": repeats, "warmup": warmup, "tiny": tiny, "workloads": {}, "e2e": {},
    }
    for n in names:
        kind, size = specs[n]
        x = inputs[n]
        host = torch.from_numpy(x)
        row: dict = {"kind": kind, "size": list(size), "target_ms": None if tiny else TARGET_MS.get(n)}
        fn = _hf_fn(kind, size, x, cfg) if hf else None
        row["hf_cpu"] = measure(fn, cpu, repeats, warmup) if fn is not None else None
        row["ours_cpu"] = measure(_ours_fn(kind, size, host, cfg, cpu), cpu, repeats, warmup)
        if dev.type == "cuda":
            row["ours_gpu"] = measure(_ours_fn(kind, size, host, cfg, dev), dev, repeats, warmup)
            resident = host.to(dev)
            row["ours_gpu_resident"] = measure(_ours_fn(kind, size, resident, cfg, dev), dev, repeats, warmup)
        else:
            row["ours_gpu"] = row["ours_gpu_resident"] = None
        report["workloads"][n] = row
    if e2e and any(n in E2E for n in names):
        rt, model_cfg, sizes, dtype = _build_runtime(dev, tiny)
        report["e2e_model"] = {"sizes": sizes, "dtype": dtype, "cuda_graphs": rt.use_cuda_graphs}
        for n in names:
            if n in E2E:
                kind, size = specs[n]
                report["e2e"][n] = _e2e(n, kind, size, inputs[n], dev, repeats, warmup, rt, model_cfg)
    return report


def _ms(t: dict | None) -> str:
    return "-" if t is None else f"{t['median_ms']:.3f}"


def format_markdown(report: dict) -> str:
    """The report as two markdown tables (preprocessing; raw to embeddings)."""
    title = (f"Preprocessing from raw inputs in memory, median ms ({report['card']}, torch {report['torch']}, "
             f"{report['date']}{', tiny inputs' if report['tiny'] else ''})")
    header = ("| workload | transformers CPU | omnienc CPU | omnienc GPU (host input) | omnienc GPU (input on GPU) "
              "| CPU processor / GPU | target |")
    lines = [title, "", header, "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in report["workloads"].items():
        speedup = (f"{r['hf_cpu']['median_ms'] / r['ours_gpu']['median_ms']:.0f}x"
                   if r["hf_cpu"] and r["ours_gpu"] else "-")
        target = "-" if r["target_ms"] is None else f"<= {r['target_ms']} ms" + (
            "" if r["ours_gpu"] is None else (" met" if r["ours_gpu"]["median_ms"] <= r["target_ms"] else " missed"))
        lines.append(f"| {name} | {_ms(r['hf_cpu'])} | {_ms(r['ours_cpu'])} | {_ms(r['ours_gpu'])} | "
                     f"{_ms(r['ours_gpu_resident'])} | {speedup} | {target} |")
    if report["e2e"]:
        m = report.get("e2e_model", {})
        title = (f"Raw input to embeddings ({m.get('sizes')} sizes, {m.get('dtype')}, "
                 f"CUDA graphs {'on' if m.get('cuda_graphs') else 'off'}), median ms")
        lines += ["", title, "",
                  "| workload | encode of ready inputs | preprocess + encode | ratio | target |",
                  "|---|---:|---:|---:|---:|"]
        for name, r in report["e2e"].items():
            t = r["target_ratio"]
            target = "-" if t is None or report["tiny"] else f"<= {t}x {'met' if r['ratio'] <= t else 'missed'}"
            lines.append(f"| {name} | {_ms(r['encode_ready'])} | {_ms(r['raw_to_embeds'])} | {r['ratio']:.2f}x "
                         f"| {target} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m omnienc.tools.bench_preprocess",
                                description="Preprocessing from raw inputs: transformers' CPU processors vs "
                                "omnienc.preprocess on the CPU and the GPU, and raw inputs to embeddings.")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    p.add_argument("--repeats", type=int, default=50, help="timed calls per cell (default 50)")
    p.add_argument("--warmup", type=int, default=10, help="untimed calls first (default 10)")
    p.add_argument("--workloads", default=None, help=f"comma-separated subset of {','.join(WORKLOADS)}")
    p.add_argument("--no-e2e", action="store_true", help="skip raw-to-embeddings (no model is built)")
    p.add_argument("--no-hf", action="store_true", help="skip transformers' processors")
    p.add_argument("--tiny", action="store_true", help="small inputs and reduced model sizes (smoke run)")
    p.add_argument("--out", default=None, metavar="FILE.json", help="write the JSON report here")
    args = p.parse_args(argv)
    try:
        report = run_preprocess_bench(args.device, args.repeats, args.warmup,
                                      args.workloads.split(",") if args.workloads else None,
                                      e2e=not args.no_e2e, tiny=args.tiny, hf=not args.no_hf)
    except ValueError as e:
        print(f"bench_preprocess: error: {e}", file=sys.stderr)
        return 2
    print(format_markdown(report), end="")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
