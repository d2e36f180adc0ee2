"""What a pack's sighting of its exact layout does: the rule, pure, shared by the lane and the simulator.

A lane with exact-layout graphs asks, for each pack on a bucket, its layout's ``GraphCache``
(``cuda.cache``): a layout with a graph replays it (``exact_replay``); a layout due for one (its
``exact_at``-th sighting, while captures are paying for themselves) runs eagerly on its exact plan
and that work is captured (``exact_capture``); any other pack runs on its bucket. A pack merged into
one eager call with others is only sighted. The simulator drives the same cache class, built from
the same ``RuntimeConfig``, with the same calls in the same order, so its captures, replays,
refusals and evictions are the runtime's.
"""

from __future__ import annotations

from collections.abc import Hashable

from ..cuda.cache import GraphCache
from .config import RuntimeConfig

EXACT_REPLAY, EXACT_CAPTURE = "exact_replay", "exact_capture"


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


__all__ = ["EXACT_CAPTURE", "EXACT_REPLAY", "exact_cache", "exact_counts", "exact_route"]
