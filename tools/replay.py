"""``omnienc replay``: simulate a request trace against a bucket grid (hits, padding, fallbacks)."""

from __future__ import annotations

import argparse
import json
import sys

from omnienc.runtime.grid import BucketGrid, GridError
from omnienc.runtime.simulate import simulate
from omnienc.runtime.trace import read_trace


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Adds the ``replay`` subcommand; its ``func`` default is :func:`run`."""
    p = subparsers.add_parser(
        "replay", help="simulate a request trace against a bucket grid",
        description="Pack a trace's requests into the grid's buckets the way the runtime does and "
        "report per-bucket hits, padding and eager fallbacks.")
    p.add_argument("--trace", required=True, help="JSONL request trace")
    p.add_argument("--grid", default=None, help="YAML bucket grid (default: packaged grid)")
    p.add_argument("--step-ms", type=float, default=10.0,
                   help="batching window in ms (default 10; 0 packs each request alone)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Runs ``omnienc replay``; returns 0, or 2 on bad input (message on stderr)."""
    try:
        if not args.step_ms >= 0:
            raise GridError(f"--step-ms {args.step_ms} is negative; pass 0 or more")
        grid = BucketGrid.default() if args.grid is None else BucketGrid.from_yaml(args.grid)
        records = read_trace(args.trace)
    except ValueError as e:  # GridError, TraceError
        print(f"omnienc replay: error: {e}", file=sys.stderr)
        return 2
    report = simulate(records, grid, args.step_ms)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format_table())
    return 0
