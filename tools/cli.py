"""The ``omnienc`` command line. Each subcommand lives in its own module with ``register`` and ``run``.

Only the module of the subcommand being run is imported (the others are listed by their one-line
summary), so ``omnienc --help`` and ``omnienc COMMAND --help`` start without torch where the
subcommand's module does not need it to build its options.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Iterable

from .args import HelpFormatter

# Subcommand -> its one-line summary, in --help order; the module omnienc.tools.<name> is imported
# only when that subcommand runs.
COMMANDS = {
    "demo": "encode synthetic images, a video and audios (no checkpoint needed)",
    "capture": "capture every bucket's CUDA graph (engine warm-up)",
    "encode": "encode images, videos and audio files into a safetensors file",
    "bench": "benchmark HF vs omnienc (eager, runtime) vs the GEMM floor",
    "ab": "A/B the runtime's optimizations (GPU)",
    "simulate": "simulate a request trace against a bucket grid (predicted GPU time)",
    "tune": "choose the bucket grid with the least predicted GPU time on a trace",
    "tracegen": "write a synthetic request trace",
}
ALIASES = {"replay": "simulate"}  # older names, kept working and left out of the help


def _tidy(p: argparse.ArgumentParser) -> None:
    """Help that wraps between words, for subcommands registered with argparse's own formatters."""
    if p.formatter_class in (argparse.HelpFormatter, argparse.RawDescriptionHelpFormatter):
        p.formatter_class = HelpFormatter


def build_parser(load: Iterable[str] = tuple(COMMANDS)) -> argparse.ArgumentParser:
    """The parser; the subcommands in ``load`` are imported and registered, the others listed by
    their summary only (``omnienc --help`` loads none)."""
    load = set(load)
    parser = argparse.ArgumentParser(
        prog="omnienc", formatter_class=HelpFormatter,
        description="Qwen3-Omni vision and audio encoders with a bucketed CUDA-graph runtime. "
        "Each command has its own --help.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, summary in COMMANDS.items():
        if name in load:
            _tidy(importlib.import_module(f"omnienc.tools.{name}").register(sub))
        else:
            sub.add_parser(name, help=summary)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not sys.stderr.isatty():  # a bar redrawn into a log file is noise; tqdm reads this when imported
        os.environ.setdefault("TQDM_DISABLE", "1")
    name = ALIASES.get(argv[0], argv[0]) if argv else None
    parser = build_parser([name] if name in COMMANDS else [])
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
