"""CUDA graph capture, the cache of graphs per exact layout, and CUDA-event timing.

The floor below ``omnienc.preprocess`` and ``omnienc.runtime``: both capture with ``graphs``, keep
graphs of repeated layouts in a ``GraphCache`` and time with ``timing``; this package imports
neither of them. ``GraphCache`` is pure Python and imports without torch (the simulator drives the
runtime's own cache rule); the rest loads on first use.
"""

from importlib import import_module

from .cache import GraphCache

_LAZY = {"capture": ".graphs", "capture_live": ".graphs", "PendingTimings": ".timing", "elapsed_ms": ".timing",
         "median_ms": ".timing"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["GraphCache", "PendingTimings", "capture", "capture_live", "elapsed_ms", "median_ms"]
