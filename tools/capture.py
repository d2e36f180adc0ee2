"""``omnienc capture``: the warm-up an engine runs at start -- build, capture, report, optionally verify."""

from __future__ import annotations

import argparse
import json
import sys
import time

from .args import HelpFormatter, UsageError, add_number, check_output, command, error, progress_wanted

OUTPUT_SUFFIXES = (".yaml", ".yml")


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("capture", help="capture every bucket's CUDA graph (engine warm-up)",
                              formatter_class=HelpFormatter,
                              description="Build the encoders, capture every bucket of the grid, print per-bucket "
                              "capture time and the graph pool's memory; --verify compares each bucket's replay "
                              "with the eager forward on random inputs and exits 1 on a mismatch. --calibrate "
                              "-o FILE instead measures the cost model of omnienc simulate and omnienc tune on this "
                              "card (seconds at the real sizes, --quick fewer: docs/BENCHMARKS.md; "
                              "on a CPU with --sizes reduced for a check of the path).")
    p.add_argument("--grid", help="bucket grid YAML (default: the packaged configs/qwen3_omni.yaml)")
    p.add_argument("--checkpoint", help="Qwen3-Omni checkpoint folder (default: random weights)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    p.add_argument("--devices", default=None, metavar="0,1",
                   help="CUDA device indices: one runtime per device (same weights, copied from the first), "
                   "each captured on its own device and reported (and verified) per device")
    p.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default=None,
                   help="default: float32 on a CPU (its bfloat16 kernels are slow), else the grid's dtype "
                   "(with --calibrate: bfloat16)")
    p.add_argument("--sizes", choices=["real", "reduced"], default=None,
                   help="random-weight model sizes (default: real on CUDA, reduced on CPU)")
    p.add_argument("--verify", action="store_true", help="check every bucket's replay against the eager forward")
    p.add_argument("--calibrate", action="store_true",
                   help="instead of the grid: time replays of a probe grid and eager runs, and write the "
                   "cost model that omnienc simulate and omnienc tune use (--costs) to -o FILE")
    p.add_argument("--quick", action="store_true",
                   help="with --calibrate: the start-up calibration, fewer points and repeats (the file says so)")
    p.add_argument("--calibrate-quick", action="store_true", help="--calibrate --quick")
    p.add_argument("-o", "--output", default=None, metavar="FILE.yaml",
                   help="with --calibrate: the cost model YAML to write (written whole or not at all)")
    add_number(p, "--repeats", lo=1, hi=10_000, default=None, metavar="N",
               help="with --calibrate: timed replays per probe (default 7, --quick 3; eager runs: half as many)")
    add_number(p, "--warmup", lo=0, hi=10_000, default=None, metavar="N",
               help="with --calibrate: untimed runs before each probe (default 2, --quick 1)")
    add_number(p, "--warm-ms", kind=float, lo=0, hi=10_000, default=None, metavar="MS",
               help="with --calibrate: before each replay and eager probe, keep the device busy with it "
               "at least MS (at most 8 runs more), so it is timed as a trace's sustained load runs it "
               "(default 300 on CUDA, 0 elsewhere; 0 turns it off)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=command("capture", run))
    return p


def load_grid(path):
    """The grid at ``path`` (default: the packaged one); ``UsageError`` naming the file if unusable."""
    from ..runtime import BucketGrid, GridError

    try:
        return BucketGrid.from_yaml(path) if path else BucketGrid.default()
    except (OSError, GridError) as e:
        raise UsageError(f"cannot use grid {path}: {e}") from None


def run_dtype(args, device: str, grid_dtype: str) -> tuple[str, str]:
    """The dtype to build in, and a note when it is not what the user or the grid asked for."""
    if args.dtype:
        slow = device == "cpu" and args.dtype != "float32"
        return args.dtype, " (the CPU's bfloat16 and float16 kernels are slow)" if slow else ""
    if device == "cpu":
        return "float32", f" (the CPU's default; the grid's {grid_dtype} is for CUDA graphs; --dtype to choose)"
    return grid_dtype, ""


def calibrate(args) -> int:
    """``capture --calibrate``: measures a cost model on the encoders and writes it to ``args.output``."""
    import shlex

    from ..runtime.atomic import atomic_path
    from ..runtime.calibrate import PROBES, REPEATS, calibrate
    from ..runtime.costs import CostModel
    from .models import build_encoders, device_from_arg

    if not args.output:
        return error("capture", "--calibrate needs -o FILE (the cost model to write)")
    check_output("-o", args.output, OUTPUT_SUFFIXES, [("--grid", args.grid)] + _checkpoint_files(args))
    try:
        device = str(device_from_arg(args.device))
    except ValueError as e:
        return error("capture", str(e))
    sizes = args.sizes or ("real" if device.startswith("cuda") else "reduced")
    quick = args.quick or args.calibrate_quick
    repeats, _, _, warmup = REPEATS["quick" if quick else "full"]
    repeats = args.repeats or repeats
    warmup = warmup if args.warmup is None else args.warmup
    dtype, note = run_dtype(args, device, "bfloat16")
    if note:
        print(f"dtype {dtype}{note}")
    t0 = time.perf_counter()
    vis, aud = build_encoders(args.checkpoint, device, dtype, sizes)
    command = shlex.join(["omnienc", "capture", "--calibrate", *(["--quick"] if quick else []), "-o", args.output,
                          "--device", device, "--dtype", dtype, "--sizes", sizes, "--repeats", str(repeats),
                          "--warmup", str(warmup),
                          *(["--warm-ms", f"{args.warm_ms:g}"] if args.warm_ms is not None else [])]
                         + (["--checkpoint", args.checkpoint] if args.checkpoint else []))
    built = time.perf_counter() - t0
    print(f"device {device}, {dtype}, weights: {args.checkpoint or f'random ({sizes} sizes)'}; built in {built:.1f} s")
    t1 = time.perf_counter()
    model = calibrate(vis, aud, PROBES["quick" if quick and sizes == "real" else sizes], repeats=repeats,
                      warmup=warmup, eager_repeats=max(1, (repeats + 1) // 2), command=command, warm_ms=args.warm_ms,
                      progress=None if args.json else print, quick=quick)
    calibrated = time.perf_counter() - t1
    header = "\n".join([
        f"Cost model measured by `{command}`",
        f"on {model.meta['card']}, torch {model.meta['torch']}, {model.meta['date']}; {sizes} model sizes"
        f"{'; quick (start-up) calibration' if quick else ''}; calibration {calibrated:.1f} s.",
        "size: bucket size (replay) or units (eager, floor, capture), in patches / mel frames; batch: segments or",
        "items; ms: median of samples (every timed run, ms). Used by `omnienc simulate/tune --costs FILE`.",
    ])
    try:
        with atomic_path(args.output) as tmp:
            model.save(tmp, header=header)
            CostModel.load(tmp)  # the written file must load before it replaces anything
    except OSError as e:
        return error("capture", f"cannot write {args.output}: {e}; nothing was written")
    print(f"wrote {args.output}: {model.card}; calibration {calibrated:.1f} s{' (quick)' if quick else ''}, "
          f"{time.perf_counter() - t0:.1f} s with building the encoders")
    return 0


def devices_of(args) -> list[str]:
    """The devices a command runs on: ``--devices`` (CUDA indices, checked) or ``--device`` (default:
    cuda if available). Raises ``ValueError`` naming what is wrong."""
    from .models import device_from_arg, parse_devices

    if getattr(args, "devices", None) is None:
        return [str(device_from_arg(args.device))]
    if args.device is not None:
        raise ValueError(f"give --device or --devices, not both (got --device {args.device} --devices {args.devices})")
    return [f"cuda:{i}" for i in parse_devices(args.devices)]


def _checkpoint_files(args) -> list[tuple[str, object]]:
    from pathlib import Path

    root = Path(args.checkpoint) if args.checkpoint else None
    return [("--checkpoint", p) for p in sorted(root.iterdir()) if p.is_file()] if root and root.is_dir() else []


def run(args) -> int:
    if (args.quick or args.calibrate_quick) and not (args.calibrate or args.calibrate_quick):
        return error("capture", "--quick is a kind of --calibrate; add --calibrate, or use --calibrate-quick")
    if args.warm_ms is not None and not (args.calibrate or args.calibrate_quick):
        return error("capture", "--warm-ms warms up --calibrate's probes; add --calibrate, or leave it out")
    if args.calibrate or args.calibrate_quick:
        if args.devices is not None:
            return error("capture", "--calibrate measures one device; use --device cuda:N")
        return calibrate(args)
    if args.output:
        return error("capture", "-o is the cost model --calibrate writes; add --calibrate, or leave -o out")
    from .models import build_encoders, device_context, replicate

    try:
        devices = devices_of(args)
    except ValueError as e:
        return error("capture", str(e))
    grid = load_grid(args.grid)
    device = devices[0]
    sizes = args.sizes or ("real" if device.startswith("cuda") else "reduced")
    dtype, note = run_dtype(args, device, grid.dtype)
    if note and not args.json:
        print(f"dtype {dtype}{note}")
    t0 = time.perf_counter()
    vis, aud = build_encoders(args.checkpoint, device, dtype, sizes)
    built_s = time.perf_counter() - t0
    reports, ok = [], True
    for k, dev in enumerate(devices):
        t1 = time.perf_counter()
        v, a = (vis, aud) if k == 0 else (replicate(vis, dev), replicate(aud, dev))
        with device_context(dev):
            report, good = capture_one(args, grid, v, a, dev, dtype, sizes,
                                       built_s if k == 0 else time.perf_counter() - t1)
        if k:
            report["copied_from"] = device
        reports.append(report)
        ok = ok and good
        if not args.json:
            print_report(report, good if args.verify else None, header=len(devices) > 1)
    if args.json:
        print(json.dumps(reports[0] if args.devices is None else {"devices": reports}, indent=2))
    return 0 if ok else 1


def capture_one(args, grid, vis, aud, device: str, dtype: str, sizes: str, built_s: float) -> tuple[dict, bool]:
    """Captures a runtime over ``vis``/``aud`` on ``device`` (the current device); returns its report
    and whether ``--verify`` (if asked) passed."""
    from ..runtime import EncoderRuntime
    from ..runtime.verify import verify_buckets

    rt = EncoderRuntime(vision=vis, audio=aud, grid=grid, device=device)
    info = rt.capture(progress=progress_wanted(not args.json))
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
    return report, ok


def print_report(report: dict, verified: bool | None, header: bool = False) -> None:
    """One device's capture report as text (``verified``: the ``--verify`` outcome, None if not asked)."""
    device = report["device"]
    if header:
        print(f"== {device} ==")
    how = f"copied from {report['copied_from']}" if "copied_from" in report else "built"
    print(f"device {device}, {report['dtype']}, weights: {report['weights']}; {how} in {report['build_s']:.1f} s")
    if report["graphs"] or device != "cpu":
        print(f"captured {report['graphs']} graphs in {report['capture_s']:.2f} s; graph pool "
              f"{report['graph_memory_bytes'] / 2**20:.0f} MiB")
    else:
        print(f"CPU: no CUDA graphs; each graph bucket ran its forward once, eagerly, in {report['capture_s']:.2f} s")
    for m, buckets in report["buckets"].items():
        for name, s in buckets.items():
            att = report["attention"][m].get(name)
            times = ", ".join(f"{b} {t:.3f} ms" for b, t in (att or {}).get("ms", {}).items())
            print(f"  {m:6s} {name:>12s}  " + ("   eager bucket (above graphs_up_to)" if s is None else
                  f"{s * 1e3:8.1f} ms  attention {att['backend']}" + (f" ({times})" if times else "")))
    for c in report.get("verify", []):
        print(f"  verify {c['modality']:6s} {c['bucket']:>12s}  {c['requests']:3d} requests  max rel err "
              f"{c['max_rel_err']:.2e}  min cos {c['min_cosine']:.6f}  {'ok' if c['ok'] else 'MISMATCH'}")
    if verified is not None:
        where = f" {device}" if header else ""
        print(f"verify{where}: all buckets match the eager forward" if verified else f"verify{where}: MISMATCH",
              file=sys.stdout if verified else sys.stderr)
