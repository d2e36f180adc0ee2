"""``python benchmarks/service_bench.py``: ``EncoderService`` on one or several GPUs: closed loop,
throughput and idle latency (``omnienc.tools.service_load``: what each part measures).

    python benchmarks/service_bench.py [--devices 0,1] [--requests 2000] [--parts closed_loop,...]
        [--seconds 3] [--tiny] [--out service.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from omnienc.tools.models import parse_devices
from omnienc.tools.service_load import PARTS, format_markdown, run_service_bench


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python benchmarks/service_bench.py",
                                description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    p.add_argument("--devices", default=None, help="CUDA device indices, e.g. 0,1 (default: every visible GPU)")
    p.add_argument("--requests", type=int, default=None, help="throughput requests (default 2000; --tiny 24)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma list (default all): {','.join(PARTS)}")
    p.add_argument("--seconds", type=float, default=None, help="closed-loop window per workload (default 3)")
    p.add_argument("--latency-repeats", type=int, default=None, help="latency samples (default 50)")
    p.add_argument("--max-wait-ms", type=float, default=2.0, help="the service's max_wait_ms (default 2)")
    p.add_argument("--quiet-ms", type=float, default=None,
                   help="the service's quiet_ms (default: off, the service's default)")
    p.add_argument("--max-batch", type=int, default=64, help="the service's max_batch (default 64)")
    p.add_argument("--costs", default=None, help="cost model YAML for dispatch (default: the packaged one)")
    p.add_argument("--grid", default=None, help="bucket grid YAML (default: the packaged grid)")
    p.add_argument("--tiny", action="store_true", help="CPU smoke run: reduced sizes, small requests, few of each")
    p.add_argument("--seed", type=int, default=0, help="trace and input seed (default 0)")
    p.add_argument("--out", default=None, help="write the JSON report to this file")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the bench; returns 0, 1 if a part failed (see Errors), 2 on bad arguments."""
    from omnienc.runtime import BucketGrid, GridError

    args = parse_args(argv)
    try:
        devices = [f"cuda:{i}" for i in parse_devices(args.devices)] if args.devices else None
        grid = BucketGrid.from_yaml(args.grid) if args.grid else BucketGrid.default()
        parts = [s.strip() for s in args.parts.split(",") if s.strip()]
        report = run_service_bench(
            devices=devices, requests=args.requests, tiny=args.tiny, parts=parts, seconds=args.seconds,
            latency_repeats=args.latency_repeats, max_wait_ms=args.max_wait_ms, max_batch=args.max_batch,
            grid=grid, grid_name=args.grid or "default (omnienc/configs/qwen3_omni.yaml)", costs=args.costs,
            seed=args.seed, log=lambda s: print(s, file=sys.stderr),
            quiet_ms=None if args.quiet_ms is None or args.quiet_ms < 0 else args.quiet_ms)
    except (ValueError, GridError, OSError) as e:
        print(f"service_bench: error: {e}", file=sys.stderr)
        return 2
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(format_markdown(report))
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
