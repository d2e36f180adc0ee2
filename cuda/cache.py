"""Graphs of exact layouts, captured when a layout comes back (pure Python: the caller captures).

A *layout* is whatever fixes the device work of a call (its items' sizes, in order); equal layouts
run the same kernels on the same shapes, so one CUDA graph serves them all. ``GraphCache`` decides
which layouts get a graph and keeps them:

* sightings: a layout is captured at its ``admit_at``-th sighting (the earlier ones run eagerly,
  which builds every lazily made kernel plan the capture then needs); the last ``max_seen``
  layouts' sightings are remembered;
* credit (optional): captures are paid for by replays, a token bucket of ``credit`` tokens: a
  capture spends one, a replay earns one, every ``refill`` sightings earn one. Traffic whose layouts
  come back once and never again then stops capturing, while repeated layouts earn their credit back
  at once;
* at most ``max_graphs`` graphs are kept, least recently used out, in one memory pool;
* a layout whose capture failed is never captured again.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable


class GraphCache:
    """Which exact layouts have a graph, and which are due for one (see the module docstring).

    Args:
        max_graphs: graphs kept (least recently used out), >= 1.
        admit_at: a layout is captured at this sighting, >= 1.
        max_seen: layouts whose sightings are remembered, >= 1.
        credit: the token bucket's size (and its start); None: captures are never refused.
        refill: sightings that earn one token, >= 1 (with ``credit``).

    Attributes:
        credit: capture tokens left (None: no credit kept).
        pool: the graph memory pool captures go into (the first capture's unless set).
        counts: ``captures``, ``replays`` (lookups that found a graph), ``failures``, ``evictions``
            and ``refused`` (captures due but refused for want of credit).
    """

    def __init__(self, max_graphs: int, admit_at: int, max_seen: int, credit: float | None = None,
                 refill: int = 1):
        for name, value in (("max_graphs", max_graphs), ("admit_at", admit_at), ("max_seen", max_seen),
                            ("refill", refill)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GraphCache: {name}={value!r} must be an integer >= 1")
        if credit is not None and not credit >= 0:
            raise ValueError(f"GraphCache: credit={credit!r} must be >= 0, or None (no credit)")
        self.max_graphs, self.admit_at, self.max_seen = max_graphs, admit_at, max_seen
        self.max_credit, self.refill = credit, refill
        self.credit = None if credit is None else float(credit)
        self.pool = None
        self._graphs: OrderedDict[Hashable, object] = OrderedDict()
        self._seen: OrderedDict[Hashable, int] = OrderedDict()  # layout -> sightings; -1: capture failed
        self.counts = {"captures": 0, "replays": 0, "failures": 0, "evictions": 0, "refused": 0}

    def lookup(self, key: Hashable):
        """The graph entry of ``key``, counted as a replay (it earns a token), or None."""
        entry = self._graphs.get(key)
        if entry is not None:
            self._graphs.move_to_end(key)
            self.counts["replays"] += 1
            if self.credit is not None:
                self.credit = min(self.credit + 1.0, self.max_credit)
        return entry

    def sight(self, key: Hashable) -> int:
        """Counts a sighting of ``key`` (a layout without a graph; it earns a fraction of a token);
        returns its sightings before this one (-1: its capture failed)."""
        if self.credit is not None:
            self.credit = self._credit_after_sighting()
        seen = self._seen.pop(key, 0)
        self._seen[key] = seen if seen < 0 else seen + 1
        while len(self._seen) > self.max_seen:
            self._seen.popitem(last=False)
        return seen

    def sightings(self, key: Hashable) -> int:
        """Sightings of ``key`` remembered (-1: its capture failed); changes nothing."""
        return self._seen.get(key, 0)

    def admit(self, key: Hashable) -> bool:
        """Counts a sighting of ``key``; True when it is to be captured now (then its token is spent)."""
        seen = self.sight(key)
        if seen < 0 or seen + 1 < self.admit_at:
            return False
        if self.credit is not None:
            if self.credit < 1.0:  # captures have not been paying: this layout waits its turn
                self.counts["refused"] += 1
                return False
            self.credit -= 1.0
        return True

    def due(self, key: Hashable) -> bool:
        """Whether a sighting of ``key`` (no graph held) now would capture it; changes nothing."""
        seen = self._seen.get(key, 0)
        return (seen >= 0 and seen + 1 >= self.admit_at
                and (self.credit is None or self._credit_after_sighting() >= 1.0))

    def wanted(self, key: Hashable) -> bool:
        """Whether ``key`` has a graph or a sighting now would capture it; changes nothing."""
        return key in self._graphs or self.due(key)

    def capture(self, key: Hashable, build: Callable[[], object]):
        """Keeps ``build()``'s entry (it captures; the entry's ``graph`` gives the pool, unless it has
        none: the simulator's stand-ins) as ``key``'s graph and returns it; if ``build`` raises, the
        layout is marked failed and None is returned."""
        try:
            entry = build()
        except Exception:  # noqa: BLE001 - an uncapturable layout runs without a graph from now on
            self.failed(key)
            return None
        graph = getattr(entry, "graph", None)  # a simulated entry has none
        self.pool = self.pool or (graph.pool() if graph is not None else None)
        self.counts["captures"] += 1
        if len(self._graphs) >= self.max_graphs:
            self._graphs.popitem(last=False)
            self.counts["evictions"] += 1
        self._graphs[key] = entry
        return entry

    def failed(self, key: Hashable) -> None:
        """Marks ``key``'s capture failed: it is never captured again."""
        self._seen[key] = -1
        self.counts["failures"] += 1

    def entries(self) -> list:
        """The graph entries held, least recently used first."""
        return list(self._graphs.values())

    def reset_admission(self) -> None:
        """Forgets every sighting and refills the credit (graphs are kept): layouts start over."""
        self._seen.clear()
        if self.credit is not None:
            self.credit = float(self.max_credit)

    def drop_graphs(self) -> None:
        """Drops every graph (sightings are kept)."""
        self._graphs.clear()

    def clear(self) -> None:
        """Drops every graph and sighting."""
        self._graphs.clear()
        self._seen.clear()

    def __contains__(self, key: Hashable) -> bool:
        return key in self._graphs

    def __len__(self) -> int:
        return len(self._graphs)

    def _credit_after_sighting(self) -> float:
        return min(self.credit + 1.0 / self.refill, self.max_credit)


__all__ = ["GraphCache"]
