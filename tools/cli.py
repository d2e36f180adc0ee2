"""The ``omnienc`` command line. Each subcommand lives in its own module with ``register`` and ``run``."""

from __future__ import annotations

import argparse
import importlib
import sys

# Subcommand modules, in --help order.
COMMANDS = ("demo", "capture", "encode", "bench", "ab", "replay", "tune", "tracegen")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="omnienc",
        description="Qwen3-Omni vision and audio encoders with a bucketed CUDA-graph runtime.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"omnienc.tools.{name}")
        except ModuleNotFoundError as e:  # TEMP while subcommands land
            if e.name == f"omnienc.tools.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
