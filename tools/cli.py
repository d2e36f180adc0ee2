"""The ``omnienc`` command line. Each subcommand lives in its own module with ``register`` and ``run``."""

from __future__ import annotations

import argparse
import importlib
import sys

# Subcommand modules, in --help order.
COMMANDS = ("demo", "capture", "encode", "bench", "ab", "simulate", "tune", "tracegen")
ALIASES = {"replay": "simulate"}  # older names, kept working and left out of the help


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only``, just that subcommand's module is imported (fast start-up)."""
    parser = argparse.ArgumentParser(
        prog="omnienc",
        description="Qwen3-Omni vision and audio encoders with a bucketed CUDA-graph runtime.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in (only,) if only else COMMANDS:
        importlib.import_module(f"omnienc.tools.{name}").register(sub)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    name = ALIASES.get(argv[0], argv[0]) if argv else None
    parser = build_parser(name if name in COMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
