"""``omnienc bench``: its options (this module imports no torch, so ``omnienc bench --help`` starts
at once); the benchmark itself is ``tools/bench_run.py``, whose names this module also gives."""

from __future__ import annotations

import argparse
import importlib

from omnienc.tools.workloads import WORKLOADS

COLUMNS = ("hf_per_request", "hf_batched", "native_eager", "runtime", "floor", "raw_hf", "raw_cpu_runtime",
           "raw_gpu_runtime", "pre_cpu", "pre_gpu")
# Targets of GPU preprocessing + encode over the encode of ready inputs.
RAW_TARGETS = {"raw_image448": 1.15, "raw_audio10s": 1.2, "raw_mixed32": 1.10}


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
    p.add_argument("--devices", default=None, metavar="0,1",
                   help="CUDA device indices: the columns run on the first; then the throughput workload "
                   "(the first --service-requests requests of `tracegen --rate 200`, submitted at once to an "
                   "EncoderService over one device, then over all: requests/s, GPU-busy share per device; "
                   "tools/service_load.py)")
    p.add_argument("--service-requests", type=int, default=None,
                   help="with --devices: requests of the throughput workload (default 2000; --tiny 24)")
    p.add_argument("--tiny", action="store_true", help="tiny encoder configs (CPU tests)")
    p.add_argument("--workloads", default=None, help=f"comma list (default all): {','.join(WORKLOADS)}")
    p.add_argument("--columns", default=None, help=f"comma list (default all): {','.join(COLUMNS)}")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per cell (default 30 on CUDA, 5 on CPU)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed calls per cell, all of them (default 3 on CUDA, 1 on CPU, fewer for a slow cell)")
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
    """Runs ``omnienc bench`` (``bench_run.run``)."""
    from omnienc.tools.bench_run import run as run_bench_command

    return run_bench_command(args)


def __getattr__(name: str):
    """The benchmark's other names (``run_bench``, ``resolve_device``, ...), from ``bench_run``."""
    if name.startswith("__"):
        raise AttributeError(name)
    return getattr(importlib.import_module("omnienc.tools.bench_run"), name)


def main(argv=None) -> int:
    from omnienc.tools.bench_run import main as bench_main

    return bench_main(argv)


__all__ = ["COLUMNS", "RAW_TARGETS", "register", "run"]


if __name__ == "__main__":
    raise SystemExit(main())
