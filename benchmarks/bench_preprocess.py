"""Preprocessing alone: raw inputs in memory -> encoder inputs, transformers' CPU processors vs
``omnienc.preprocess`` on the CPU and the GPU; host-to-device copy strategies; kernel counts.

    python benchmarks/bench_preprocess.py [--device cuda] [--repeats 50] [--warmup 10]
        [--workloads image448,audio30s,mixed32] [--no-hf] [--no-copies] [--tiny] [--out results.json]

Raw inputs to embeddings (preprocessing + encode against the encode of ready inputs) are
``omnienc bench``'s raw workloads (``raw_image448``, ``raw_audio10s``, ``raw_mixed32``); both
programs build their raw media and time their preprocessing with ``omnienc.tools.workloads``.

Workloads (made once with fresh random content, in host memory, as an engine holds media after
decoding): ``image448`` (uint8 448x448x3), ``image720p`` (uint8 720x1280x3, resized to 704x1280),
``audio10s`` / ``audio30s`` (float32 at 16 kHz), ``audio30s44k`` (float32 at 44.1 kHz, resampled),
``mixed32`` (``raw_mixed32``'s 32 requests: images, videos, speech).

Columns (median ms per call after warm-up):

* ``hf_cpu``: transformers' ``Qwen2VLImageProcessorPil`` / ``WhisperFeatureExtractor`` on the CPU, one
  call per request, as Qwen3-Omni configures them (44.1 kHz: ``scipy.signal.resample_poly`` first;
  transformers has no resampler).
* ``ours_cpu``: ``omnienc.runtime.preprocess_requests`` on the CPU (all requests in one pass).
* ``ours_gpu``: the same on CUDA from the host inputs (the host-to-device copy counts); after the
  warm-up a repeated layout replays its CUDA graph (``omnienc.preprocess.graphs``).
* ``ours_gpu_resident``: the same with the raw inputs already on the GPU.
* ``ours_gpu_eager``: as ``ours_gpu`` without graphs (``graphs=False``): kernel by kernel, what a
  layout seen for the first time costs.
* ``kernels``: operations that run a kernel (views and allocations left out), counted on the CPU by
  a ``TorchDispatchMode`` (``count_ops``); plus one host-to-device copy per dtype on a GPU.

Copies (``--no-copies`` skips them): a 448x448x3 and a 720x1280x3 uint8 image, 30 s of float32 at
16 kHz (1.9 MB) and at 44.1 kHz (5.3 MB), host to device: ``pageable`` (``.to(device)``),
``pin_per_call`` (``staging.Stager``: a block of torch's caching host allocator, a host copy into
it, one ``non_blocking`` copy; what preprocessing does), ``pinned_reused`` (one pinned buffer
allocated once, a host copy into it, ``non_blocking``), and on the CPU the host copies alone
(``host_fresh``: into a new buffer; ``host_reused``: into one kept buffer).

CUDA timing: every call starts on an idle device, is bracketed by CUDA events and waited for, so
host work that keeps the GPU waiting (launches, copies from pageable memory) counts. CPU: wall clock.
``--tiny`` shrinks every input for a smoke run.

Function API: ``run_preprocess_bench(device, repeats, ...) -> dict`` (the JSON report),
``format_markdown(report)``, ``count_ops``; the preprocessing it times is
``omnienc.tools.workloads``' ``transformers_preprocess`` / ``omnienc_preprocess`` (``omnienc bench``'s).
"""

from __future__ import annotations

import argparse
import collections
import datetime as _dt
import json
import os
import platform
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from omnienc.tools.workloads import omnienc_preprocess, transformers_preprocess

WORKLOADS = ("image448", "image720p", "audio10s", "audio30s", "audio30s44k", "mixed32")
# Targets of GPU preprocessing alone, ms (set for an H200).
TARGET_MS = {"image448": 0.3, "image720p": 0.6, "audio30s": 0.5, "audio30s44k": 0.8}
COPIES = {"image448": ((448, 448, 3), torch.uint8), "image720p": ((720, 1280, 3), torch.uint8),
          "audio30s": ((480_000,), torch.float32), "audio30s44k": ((1_323_000,), torch.float32)}

# Operations that run no kernel: views, metadata, allocations.
NO_KERNEL = {"view", "_unsafe_view", "slice", "select", "permute", "unsqueeze", "squeeze", "expand", "unfold",
             "view_as_real", "view_as_complex", "detach", "lift_fresh", "alias", "as_strided", "t", "transpose",
             "empty", "empty_strided", "_reshape_alias", "reshape", "split", "unbind", "diagonal"}
# Operations that make the host wait for the device (on a device tensor).
SYNC_OPS = {"_local_scalar_dense", "item", "nonzero", "nonzero_static", "masked_select", "_unique", "_unique2",
            "unique_dim", "unique_consecutive", "equal", "is_nonzero", "allclose", "any", "all"}


def count_ops(fn: Callable[[], object]) -> collections.Counter:
    """The aten operations ``fn`` dispatches (by name), views and allocations left out."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = collections.Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            if name not in NO_KERNEL:
                self.ops[name] += 1
            return func(*args, **(kwargs or {}))

    with Count() as c:
        fn()
    return c.ops


def workload_items(name: str, rng: np.random.Generator, tiny: bool = False) -> list:
    """Raw items (``RawImages`` / ``RawAudio`` / ...) of a workload, in host memory."""
    from omnienc.preprocess import RawAudio, RawImages
    from omnienc.tools.workloads import all_workloads, raw_items

    if name == "mixed32":
        return raw_items(all_workloads()["raw_mixed32"], rng)
    specs = {"image448": (448, 448), "image720p": (720, 1280), "audio10s": (10, 16000), "audio30s": (30, 16000),
             "audio30s44k": (30, 44100)}
    if tiny:
        specs = {"image448": (64, 64), "image720p": (72, 128), "audio10s": (0.5, 16000), "audio30s": (1.0, 16000),
                 "audio30s44k": (1.0, 44100)}
    a, b = specs[name]
    if name.startswith("image"):
        return [RawImages([rng.integers(0, 256, (a, b, 3), dtype=np.uint8)])]
    return [RawAudio([(0.1 * rng.standard_normal(round(a * b))).astype(np.float32)], b)]


def _on_device(items: list, device) -> list:
    """The items with their arrays moved to ``device`` (the input-already-on-the-GPU column)."""
    import dataclasses

    from omnienc.preprocess import RawAudio, RawImages

    from omnienc.preprocess import pil_to_rgb

    def mv(x):
        if not isinstance(x, (np.ndarray, torch.Tensor)):  # a PIL image
            x = np.asarray(pil_to_rgb(x))
        return (torch.from_numpy(np.array(x)) if isinstance(x, np.ndarray) else x).to(device)

    out = []
    for it in items:
        if isinstance(it, RawImages):
            out.append(dataclasses.replace(it, images=[mv(x) for x in it.images]))
        elif isinstance(it, RawAudio):
            out.append(dataclasses.replace(it, waveforms=[mv(x) for x in it.waveforms]))
        else:
            out.append(dataclasses.replace(it, frames=mv(it.frames)))
    return out


def measure(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int,
            budget_s: float | None = None) -> dict:
    """Median, p10, p90, mean and min of ``fn``'s time in ms (``floor.measure``)."""
    from omnienc.tools.floor import measure as timed

    return timed(fn, device, repeats, warmup, budget_s).to_dict()


def copy_bench(device: torch.device, repeats: int, warmup: int, tiny: bool = False) -> dict:
    """Host-to-device copy strategies (see the module docstring), ms per copy."""
    from omnienc.preprocess.staging import Stager, host_copy

    out = {}
    for name, (shape, dtype) in COPIES.items():
        if tiny:
            shape = tuple(max(1, s // 16) for s in shape)
        x = (torch.randint(0, 256, shape, dtype=torch.uint8) if dtype == torch.uint8
             else torch.randn(shape, dtype=dtype))
        row = {"bytes": x.numel() * x.element_size()}
        if device.type == "cuda":
            reused = torch.empty_like(x, pin_memory=True)

            def pin_per_call():
                s = Stager(dtype, device)
                slot = s.add(x)
                s.send()
                return s.get(slot)

            def pinned_reused():
                host_copy(reused, x)
                return reused.to(device, non_blocking=True)

            row["pageable"] = measure(lambda: x.to(device), device, repeats, warmup)
            row["pin_per_call"] = measure(pin_per_call, device, repeats, warmup)
            row["pinned_reused"] = measure(pinned_reused, device, repeats, warmup)
        keep = torch.empty_like(x)
        row["host_fresh"] = measure(lambda: host_copy(torch.empty_like(x), x), torch.device("cpu"), repeats, warmup)
        row["host_reused"] = measure(lambda: host_copy(keep, x), torch.device("cpu"), repeats, warmup)
        out[name] = row
    return out


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
                         tiny: bool = False, hf: bool = True, copies: bool = True, seed: int | None = None) -> dict:
    """Times preprocessing from raw inputs (see the module docstring).

    Args:
        device: the accelerator for the ``ours_gpu`` columns (default cuda if available); on a CPU
            those columns are None.
        repeats, warmup: timed and untimed calls per cell.
        workloads: names from ``WORKLOADS`` (default all).
        tiny: small inputs, for a smoke run (``mixed32`` keeps its sizes).
        hf: time transformers' processors too. copies: time the copy strategies.

    Returns:
        The JSON report: ``workloads[name]`` with ``hf_cpu``, ``ours_cpu``, ``ours_gpu``,
        ``ours_gpu_resident`` timings (each ``{"median_ms", ...}`` or None), ``kernels`` and
        ``target_ms``; ``copies[name]`` with the strategies' timings.
    """
    from omnienc.preprocess import PreprocessConfig

    dev = _resolve(device)
    names = list(workloads or WORKLOADS)
    for n in names:
        if n not in WORKLOADS:
            raise ValueError(f"workload {n!r}: choose from {', '.join(WORKLOADS)}")
    rng = np.random.default_rng(seed)
    cfg = PreprocessConfig()
    cpu = torch.device("cpu")
    card = (torch.cuda.get_device_name(dev) if dev.type == "cuda"
            else f"CPU {platform.machine()} ({os.cpu_count()} cores)")
    command = " ".join(["python benchmarks/bench_preprocess.py", *sys.argv[1:]]) if __name__ == "__main__" else None
    report: dict = {
        "card": card, "date": _dt.datetime.now().isoformat(timespec="seconds"), "torch": torch.__version__,
        "command": command, "device": str(dev), "repeats": repeats, "warmup": warmup, "tiny": tiny,
        "workloads": {}, "copies": {},
    }
    for n in names:
        items = workload_items(n, rng, tiny)
        row: dict = {"requests": len(items), "target_ms": None if tiny else TARGET_MS.get(n)}
        fn = transformers_preprocess(items, cfg) if hf else None
        row["hf_cpu"] = measure(fn, cpu, repeats, warmup, 2.0) if fn is not None else None
        ours = omnienc_preprocess(items, cfg, cpu)
        row["ours_cpu"] = measure(ours, cpu, repeats, warmup, 2.0)
        ops = count_ops(ours)
        row["kernels"] = {"total": sum(ops.values()), "by_op": dict(ops), "syncs": sum(ops[o] for o in SYNC_OPS)}
        if dev.type == "cuda":
            row["ours_gpu"] = measure(omnienc_preprocess(items, cfg, dev), dev, repeats, warmup)
            row["ours_gpu_resident"] = measure(omnienc_preprocess(_on_device(items, dev), cfg, dev), dev, repeats,
                                               warmup)
            row["ours_gpu_eager"] = measure(omnienc_preprocess(items, cfg, dev, graphs=False), dev, repeats, warmup)
        else:
            row["ours_gpu"] = row["ours_gpu_resident"] = row["ours_gpu_eager"] = None
        report["workloads"][n] = row
    if copies:
        report["copies"] = copy_bench(dev, repeats, warmup, tiny)
    return report


def _ms(t: dict | None) -> str:
    return "-" if t is None else f"{t['median_ms']:.3f}"


def format_markdown(report: dict) -> str:
    """The report as markdown tables (preprocessing; copies)."""
    title = (f"Preprocessing from raw inputs in memory, median ms ({report['card']}, torch {report['torch']}, "
             f"{report['date']}{', tiny inputs' if report['tiny'] else ''})")
    header = ("| workload | requests | transformers CPU | omnienc CPU | omnienc GPU (host input) "
              "| omnienc GPU (input on GPU) | omnienc GPU, no graph (host input) | CPU processor / GPU | kernels "
              "| target |")
    lines = [title, "", header, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in report["workloads"].items():
        speedup = (f"{r['hf_cpu']['median_ms'] / r['ours_gpu']['median_ms']:.0f}x"
                   if r["hf_cpu"] and r["ours_gpu"] else "-")
        target = "-" if r["target_ms"] is None else f"<= {r['target_ms']} ms" + (
            "" if r["ours_gpu"] is None else (" met" if r["ours_gpu"]["median_ms"] <= r["target_ms"] else " missed"))
        lines.append(f"| {name} | {r['requests']} | {_ms(r['hf_cpu'])} | {_ms(r['ours_cpu'])} | {_ms(r['ours_gpu'])} | "
                     f"{_ms(r['ours_gpu_resident'])} | {_ms(r.get('ours_gpu_eager'))} | {speedup} | "
                     f"{r['kernels']['total']} | {target} |")
    if report["copies"]:
        cols = ["pageable", "pin_per_call", "pinned_reused", "host_fresh", "host_reused"]
        lines += ["", "Host-to-device copies, median ms (host_*: the host memcpy alone)", "",
                  "| input | bytes | " + " | ".join(cols) + " |", "|---|---:|" + "---:|" * len(cols)]
        for name, r in report["copies"].items():
            lines.append(f"| {name} | {r['bytes']} | " + " | ".join(_ms(r.get(c)) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/bench_preprocess.py",
                                description="Preprocessing from raw inputs: transformers' CPU processors vs "
                                "omnienc.preprocess on the CPU and the GPU; host-to-device copies; kernel counts.")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    p.add_argument("--repeats", type=int, default=50, help="timed calls per cell (default 50)")
    p.add_argument("--warmup", type=int, default=10, help="untimed calls first (default 10)")
    p.add_argument("--workloads", default=None, help=f"comma-separated subset of {','.join(WORKLOADS)}")
    p.add_argument("--no-hf", action="store_true", help="skip transformers' processors")
    p.add_argument("--no-copies", action="store_true", help="skip the copy strategies")
    p.add_argument("--tiny", action="store_true", help="small inputs (smoke run)")
    p.add_argument("--out", default=None, metavar="FILE.json", help="write the JSON report here")
    args = p.parse_args(argv)
    try:
        report = run_preprocess_bench(args.device, args.repeats, args.warmup,
                                      args.workloads.split(",") if args.workloads else None,
                                      tiny=args.tiny, hf=not args.no_hf, copies=not args.no_copies)
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
