"""A module of this repository as an older commit had it, loaded beside the checkout's own (for an
A/B of old and new code in one process)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path


def load_old(ref: str, path: str, name: str):
    """The file ``path`` (from the repository root) at ``ref``, imported as module ``name`` (a name
    inside the package, e.g. ``omnienc.runtime.simulator_old``, so its relative imports resolve)."""
    source = subprocess.run(["git", "show", f"{ref}:{path}"], capture_output=True, text=True, check=True).stdout
    file = Path(tempfile.mkdtemp()) / Path(path).name
    file.write_text(source)
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module
