"""Files written whole or not at all: a temporary name in the target's folder, renamed onto the
target in one step (``os.replace``) once the writing succeeded."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path) -> Iterator[Path]:
    """Yields a fresh path beside ``path`` (nothing is created there); when the block ends without an
    error, whatever was written to it replaces ``path``, else it is removed: a failed or
    interrupted write leaves no partial file, and the old ``path``, if any, untouched. The caller
    creates the file, so it gets the usual permissions."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomically(path, text: str) -> None:
    """``Path(path).write_text(text, encoding="utf-8")``, whole or not at all."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
