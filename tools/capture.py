"""``omnienc capture``: the warm-up an engine runs at start -- build, capture, report, optionally verify."""

from __future__ import annotations

import argparse
import json
import sys
import time



def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("capture", help="capture every bucket's CUDA graph (engine warm-up)",
                              description="Build the encoders, capture every bucket of the grid, print per-bucket "
                              "capture time and the graph pool's memory; --verify compares each bucket's replay "
                              "with the eager forward on random inputs and exits 1 on a mismatch.")
    p.add_argument("--grid", help="bucket grid YAML (default: the packaged configs/qwen3_omni.yaml)")
    p.add_argument("--checkpoint", help="Qwen3-Omni checkpoint folder (default: random weights)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    p.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default=None, help="default: the grid's dtype")
    p.add_argument("--sizes", choices=["real", "reduced"], default=None,
                   help="random-weight model sizes (default: real on CUDA, reduced on CPU)")
    p.add_argument("--verify", action="store_true", help="check every bucket's replay against the eager forward")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)
    return p


def load_grid(path):
    from ..runtime import BucketGrid, GridError

    try:
        return BucketGrid.from_yaml(path) if path else BucketGrid.default()
    except (OSError, GridError) as e:
        raise SystemExit(f"omnienc: cannot use grid {path}: {e}") from None


def run(args) -> int:
    from ..runtime import EncoderRuntime
    from ..runtime.verify import verify_buckets
    from .models import build_encoders, default_device

    grid = load_grid(args.grid)
    device = args.device or default_device()
    sizes = args.sizes or ("real" if device.startswith("cuda") else "reduced")
    dtype = args.dtype or grid.dtype
    if device == "cpu" and dtype != "float32":
        dtype = "float32"  # CPU kernels for bf16 are slow and less exact; say so below
    t0 = time.perf_counter()
    vis, aud = build_encoders(args.checkpoint, device, dtype, sizes)
    built_s = time.perf_counter() - t0
    rt = EncoderRuntime(vision=vis, audio=aud, grid=grid, device=device)
    info = rt.capture(progress=not args.json)
    stats = rt.stats()
    report = {
        "device": device, "dtype": dtype,
        "weights": args.checkpoint or f"random ({sizes} sizes)",
        "build_s": built_s, **info,
        "buckets": {m: {k: (v["capture_s"] if v["graph"] else None) for k, v in stats[m]["buckets"].items()}
                    for m in ("vision", "audio") if m in stats},
        "attention": {m: {k: {"backend": v["attention"], "ms": v["attention_ms"]}
                          for k, v in stats[m]["buckets"].items() if v["graph"]}
                      for m in ("vision", "audio") if m in stats},
    }
    ok = True
    if args.verify:
        tight = dtype == "float32"
        checks = verify_buckets(rt, mixes=2, max_rel_err=1e-4 if tight else 3e-2, min_cosine=0.99999 if tight else 0.9995)
        ok = all(c.ok for c in checks)
        report["verify"] = [
            {"modality": c.modality, "bucket": f"{c.bucket.size}x{c.bucket.batch}", "requests": c.requests,
             "max_rel_err": c.max_rel_err, "min_cosine": c.min_cosine, "ok": c.ok} for c in checks
        ]
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"device {device}, {dtype}, weights: {report['weights']}; built in {built_s:.1f} s")
        if device == "cpu":
            print("(CPU: no CUDA graphs; each bucket ran its forward once on the eager bucket path)")
        print(f"captured {info['graphs']} graphs in {info['capture_s']:.2f} s; graph pool {info['graph_memory_bytes'] / 2**20:.0f} MiB")
        for m, buckets in report["buckets"].items():
            for name, s in buckets.items():
                att = report["attention"][m].get(name)
                times = ", ".join(f"{b} {t:.3f} ms" for b, t in (att or {}).get("ms", {}).items())
                print(f"  {m:6s} {name:>12s}  " + ("   eager bucket (above graphs_up_to)" if s is None else
                      f"{s * 1e3:8.1f} ms  attention {att['backend']}" + (f" ({times})" if times else "")))
        for c in report.get("verify", []):
            print(f"  verify {c['modality']:6s} {c['bucket']:>12s}  {c['requests']:3d} requests  max rel err "
                  f"{c['max_rel_err']:.2e}  min cos {c['min_cosine']:.6f}  {'ok' if c['ok'] else 'MISMATCH'}")
        if args.verify:
            print("verify: all buckets match the eager forward" if ok else "verify: MISMATCH", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1
