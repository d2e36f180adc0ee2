"""What a sighting does: the rules, pure, shared by the lane and the simulator.

A lane with exact-layout graphs asks, for each pack on a bucket, its layout's ``GraphCache``
(``cuda.cache``): a layout with a graph replays it (``exact_replay``); a layout due for one (its
``exact_at``-th sighting, while captures are paying for themselves) runs eagerly on its exact plan
and that work is captured (``exact_capture``); any other pack runs on its bucket. A pack merged into
one eager call with others is only sighted. The simulator drives the same cache class, built from
the same ``RuntimeConfig``, with the same calls in the same order, so its captures, replays,
refusals and evictions are the runtime's.

An uncaptured vision call of at least ``eager_cudnn_tokens`` tokens runs on cuDNN's varlen attention
(where installed), whose frontend builds one graph per segment count and longest segment, both
rounded up (``encoders.attention.cudnn_layout``): the first call of each such key pays the build
(``cudnn_key``; the runtime builds one key at capture). A vision frame shape the encoder has not
laid out (among the last ``FRAME_LAYOUT_CACHE``) is laid out on the host before its run.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from ..cuda.cache import GraphCache
from .config import RuntimeConfig

EXACT_REPLAY, EXACT_CAPTURE = "exact_replay", "exact_capture"
# The frame shapes the vision encoder keeps laid out: ``encoders.vision.FRAME_LAYOUT_CACHE``, mirrored
# here so the simulator needs no torch (tests hold the two equal). A shape beyond them is laid out again.
FRAME_LAYOUT_CACHE = 4096


def exact_cache(config: RuntimeConfig) -> GraphCache:
    """A lane's cache of exact-layout graphs, as ``config`` sets it."""
    return GraphCache(config.exact_max_graphs, config.exact_at, config.exact_seen, float(config.exact_credit),
                      config.exact_refill)


def exact_route(cache: GraphCache, key: Hashable) -> tuple[str | None, object]:
    """One pack of layout ``key`` meets the cache: ``(EXACT_REPLAY, entry)`` when a graph is held (a
    replay, counted), ``(EXACT_CAPTURE, None)`` when the layout is due now (its sighting counted, a
    capture token spent: the caller runs it eagerly and captures it), else ``(None, None)`` (a
    sighting counted; the pack runs on its bucket)."""
    entry = cache.lookup(key)
    if entry is not None:
        return EXACT_REPLAY, entry
    if cache.admit(key):
        return EXACT_CAPTURE, None
    return None, None


def exact_counts(cache: GraphCache | None) -> dict[str, int]:
    """``exact_captures``, ``exact_graph_replays``, ``exact_failures``, ``exact_evictions``,
    ``exact_refused`` of a cache (zeros without one)."""
    c = cache.counts if cache is not None else {}
    return {"exact_captures": c.get("captures", 0), "exact_graph_replays": c.get("replays", 0),
            "exact_failures": c.get("failures", 0), "exact_evictions": c.get("evictions", 0),
            "exact_refused": c.get("refused", 0)}


def segment_lengths(shapes: Sequence) -> list[int]:
    """A vision call's attention segments: one per temporal frame of each (t, h, w) item, h * w patches."""
    return [h * w for s in shapes for t, h, w in s for _ in range(t)]


def cudnn_key(seqlens: Sequence[int], steps: Sequence[int]) -> tuple[int, int]:
    """The cuDNN graph of a call over ``seqlens``: its segment count and longest segment, rounded up to
    ``steps`` (segments, tokens), as ``encoders.attention.cudnn_layout`` lays the call out."""
    count, bound = steps
    return -(-max(len(seqlens), 1) // count) * count, -(-max(max(seqlens, default=1), 1) // bound) * bound


__all__ = ["EXACT_CAPTURE", "EXACT_REPLAY", "cudnn_key", "exact_cache", "exact_counts", "exact_route",
           "segment_lengths"]
