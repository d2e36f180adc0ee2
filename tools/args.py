"""What the subcommands share at their boundary: numeric options with bounds, input and output
paths (outputs are written with ``omnienc.runtime.atomic.atomic_path``), and help that wraps between
words.

Numbers are parsed by argparse (``integer``, ``number``: no strings, no NaN or infinity) and
checked against their bounds when the command starts (``check_bounds``, called by ``command``'s
wrapper), so the same check holds whether the subcommand runs from ``omnienc`` or from a parser a
caller built with the subcommand's ``register``. Every message names the option, its value and the
bound.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path


class UsageError(ValueError):
    """A bad command line; the message says what to pass instead."""


# --- help -----------------------------------------------------------------------------------------


_MARKUP = re.compile(r"(`{1,2}|\*\*)(?=\S)(.+?)(?<=\S)\1")  # ``code``, `code`, **bold**: docstring markup


def _plain(text: str) -> str:
    """Text as a terminal shows it: docstring markup (``x``, `x`, **x**) reduced to its words."""
    return _MARKUP.sub(r"\2", text)


def _wrap(text: str, width: int) -> list[str]:
    # Options and paths stay whole: no break after a hyphen or inside a long word.
    return textwrap.wrap(_plain(text), width, break_on_hyphens=False, break_long_words=False)


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, wrapping only between words; in descriptions and epilogs, a paragraph
    with indented lines (a table, an example) is kept as written, the others are reflowed."""

    def _split_lines(self, text, width):
        return _wrap(self._whitespace_matcher.sub(" ", text).strip(), width)

    def _fill_text(self, text, width, indent):
        out = []
        for para in text.strip("\n").split("\n\n"):
            lines = para.splitlines()
            if any(line[:1].isspace() for line in lines):
                out.append("\n".join(indent + _plain(line) for line in lines))
            else:
                out.append("\n".join(indent + line for line in _wrap(" ".join(lines), width - len(indent))))
        return "\n\n".join(out)


# --- numbers --------------------------------------------------------------------------------------


def integer(text: str) -> int:
    """argparse type: a whole number (``12``, ``-3``); refuses ``1.5``, ``1e3`` and words."""
    try:
        return int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def number(text: str) -> float:
    """argparse type: a finite number; refuses words, ``nan`` and ``inf``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _show(v) -> str:
    """A bound or value as a reader writes it: whole numbers in full (67108864), others short."""
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else f"{v:g}"


@dataclass(frozen=True)
class Bound:
    """The values an option takes: at least ``lo`` (above it if ``open_lo``), at most ``hi``."""

    flag: str
    lo: float | None = None
    hi: float | None = None
    open_lo: bool = False
    unit: str = ""
    why: str = ""  # why ``hi``, said when it is exceeded

    def describe(self) -> str:
        """The range in words: ``1 to 10000``, ``above 0, up to 1024``, ``at most 60000``."""
        lo = None if self.lo is None else f"{'above' if self.open_lo else 'at least'} {_show(self.lo)}"
        if self.hi is None:
            return lo or "any number"
        if lo is None:
            return f"at most {_show(self.hi)}"
        if self.open_lo:
            return f"above {_show(self.lo)}, up to {_show(self.hi)}"
        return f"{_show(self.lo)} to {_show(self.hi)}"

    def check(self, value) -> None:
        low = self.lo is not None and (value <= self.lo if self.open_lo else value < self.lo)
        if low or (self.hi is not None and value > self.hi):
            unit = f" {self.unit}" if self.unit else ""
            why = f" ({self.why})" if self.why and self.hi is not None and value > self.hi else ""
            raise UsageError(f"{self.flag} {_show(value)} is out of range: {self.describe()}{unit}{why}")


def add_number(parser: argparse.ArgumentParser, *flags: str, kind: type = int, lo=None, hi=None,
               open_lo: bool = False, unit: str = "", why: str = "", help: str = "", **kw) -> argparse.Action:
    """Adds a numeric option (``kind`` int or float) whose bounds ``check_bounds`` enforces; the help
    ends with the range."""
    bound = Bound(flags[-1] if flags[-1].startswith("--") else flags[0], lo, hi, open_lo, unit, why)
    action = parser.add_argument(*flags, type=integer if kind is int else number,
                                 help=f"{help}; {bound.describe()}" if help else bound.describe(), **kw)
    bounds = dict(parser.get_default("_bounds") or {})
    bounds[action.dest] = bound
    parser.set_defaults(_bounds=bounds)
    return action


def check_bounds(args: argparse.Namespace) -> None:
    """Raises ``UsageError`` for the first option outside its bounds (options left unset pass)."""
    for dest, bound in (getattr(args, "_bounds", None) or {}).items():
        value = getattr(args, dest, None)
        if value is not None:
            bound.check(value)


def command(name: str, run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``run`` behind the checks every subcommand shares: bounds first, and a ``UsageError`` from
    anywhere in ``run`` becomes a message on stderr and exit status 2."""

    def checked(args: argparse.Namespace) -> int:
        try:
            check_bounds(args)
            return run(args)
        except UsageError as e:
            return error(name, str(e))

    return checked


def error(name: str, message: str) -> int:
    print(f"omnienc {name}: error: {message}", file=sys.stderr)
    return 2


def progress_wanted(asked: bool = True) -> bool:
    """A progress bar only where someone watches: asked for and stderr is a terminal (a bar redrawn
    into a log file is hundreds of lines of noise)."""
    return asked and sys.stderr.isatty()


# --- paths ----------------------------------------------------------------------------------------


def check_input_file(flag: str, path, what: str = "a file") -> Path:
    """An existing regular file, or a ``UsageError`` saying what the path is instead."""
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{flag} {path}: is a folder; name {what}")
    if not p.exists():
        raise UsageError(f"{flag} {path}: no such file")
    return p


def _same(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output(flag: str, path, suffixes: tuple[str, ...], inputs: Iterable[tuple[str, object]] = ()) -> Path:
    """Checks a file a command will write: not a folder, its folder exists, one of ``suffixes``, and
    not one of the command's ``inputs`` (``(flag, path)`` pairs; the same file under another name
    counts). Returns the path."""
    out = Path(path)
    if out.is_dir():
        raise UsageError(f"{flag} {out}: is a folder; name a {' or '.join(suffixes)} file")
    if not out.parent.is_dir():
        raise UsageError(f"{flag} {out}: folder {out.parent} does not exist")
    if out.suffix.lower() not in suffixes:
        raise UsageError(f"{flag} {out}: the file name must end in {' or '.join(suffixes)}"
                         f"{'' if not out.suffix else f', not {out.suffix}'}")
    for other_flag, other in inputs:
        if other is None:
            continue
        o = Path(other)
        if _same(out, o) or out.resolve() == o.resolve():
            raise UsageError(f"{flag} {out}: is also this command's input ({other_flag} {other}); "
                             "writing it would destroy that input; name another file")
    return out

