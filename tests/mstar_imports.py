"""Imports M*'s Qwen3-Omni modules and ``omnienc.integrations.mstar`` for the tests.

M*'s Qwen3-Omni model module imports ``triton`` (the Thinker's sampler and fused-MoE kernels) and
``flashinfer`` (the Thinker's and Talker's attention, norms and rotary) when it loads. Neither is
called by the encoder nodes, stock or omnienc's, nor by the model class's constructor, registry or
engine path these tests drive; installing both on a CPU machine costs ~1.6 GB and about a minute
(docs/MSTAR.md). So where either package is missing, ``load()`` imports M*'s modules with a stand-in
module in ``sys.modules`` for it during that import only, and removes it afterwards:

- the stand-in's attributes are inert objects: at import, a decorator (``@triton.jit``,
  ``triton.autotune(...)``) returns its function and a constructor (``triton.Config(...)``) an inert
  object; after the import, calling any of them raises, so a Thinker kernel reached by mistake fails
  loudly instead of computing;
- torch, transformers and M*'s engine modules are imported before, so none of them binds a stand-in
  (``load`` checks that only ``mstar.*`` modules loaded while the stand-ins were present);
- with triton and flashinfer installed (the GPU machine, a full M* install) nothing is stood in.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types

STOOD_IN: tuple[str, ...] = ()  # which packages the last ``load`` stood in for


class _Window:
    open = False


class _Inert:
    """Any attribute of a stand-in module."""

    def __init__(self, name: str):
        self._name = name

    def __call__(self, *args, **kwargs):
        if not _Window.open:
            raise RuntimeError(f"{self._name}(...) called: a stand-in for a package that is not installed "
                               "(tests/mstar_imports.py); only M*'s Thinker and Talker use it")
        if len(args) == 1 and not kwargs and callable(args[0]) and not isinstance(args[0], _Inert):
            return args[0]  # used as a decorator
        return _Inert(f"{self._name}()")

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Inert(f"{self._name}.{name}")

    def __getitem__(self, key):
        return _Inert(f"{self._name}[...]")


class _StandIn(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Inert(f"{self.__name__}.{name}")


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, roots: tuple[str, ...]):
        self.roots = roots

    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in self.roots:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StandIn(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def load():
    """Returns ``omnienc.integrations.mstar`` (M*'s model modules imported as described above)."""
    global STOOD_IN
    if "omnienc.integrations.mstar" in sys.modules:
        return sys.modules["omnienc.integrations.mstar"]
    # Everything that could bind a stand-in loads first, for real.
    import torch._dynamo  # noqa: F401
    import transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe  # noqa: F401

    import mstar.engine.engine  # noqa: F401
    import mstar.model.submodule_base  # noqa: F401
    import omnienc.runtime.runtime  # noqa: F401

    missing = tuple(n for n in ("triton", "flashinfer") if not _installed(n))
    STOOD_IN = missing
    if missing:
        before = set(sys.modules)
        finder = _Finder(missing)
        sys.meta_path.insert(0, finder)
        _Window.open = True
        try:
            import mstar.model.qwen3_omni.qwen3_omni_model  # noqa: F401
            import mstar.model.qwen3_omni.submodules  # noqa: F401
            import mstar.model.registry  # noqa: F401
        finally:
            _Window.open = False
            sys.meta_path.remove(finder)
            for name in [n for n in sys.modules if n.split(".")[0] in missing]:
                del sys.modules[name]
        others = sorted(n for n in set(sys.modules) - before if not n.startswith("mstar"))
        assert not others, f"modules other than M*'s loaded beside the stand-ins: {others}"
    return importlib.import_module("omnienc.integrations.mstar")
