"""CUDA graph capture, the cache of graphs per exact layout, and CUDA-event timing.

The floor below ``omnienc.preprocess`` and ``omnienc.runtime``: both capture with ``graphs``, keep
graphs of repeated layouts in a ``GraphCache`` and time with ``timing``; this package imports
neither of them.
"""

from .cache import GraphCache
from .graphs import capture, capture_live
from .timing import PendingTimings, elapsed_ms, median_ms

__all__ = ["GraphCache", "PendingTimings", "capture", "capture_live", "elapsed_ms", "median_ms"]
