"""``cuda.GraphCache`` through its public methods: sightings, credit, LRU, failures (no GPU: the
entries stand in for captured graphs)."""

from __future__ import annotations

import random

import pytest

from omnienc.cuda import GraphCache


class Graph:
    def pool(self):
        return "pool"


class Entry:
    def __init__(self, key):
        self.key, self.graph = key, Graph()


def sighted(cache: GraphCache, key) -> object | None:
    """What a caller does per call: a held graph, else a capture when admitted, else None."""
    entry = cache.lookup(key)
    if entry is None and cache.admit(key):
        entry = cache.capture(key, lambda: Entry(key))
    return entry


def test_layouts_are_captured_at_their_admitting_sighting_and_replayed_after():
    at = random.randint(1, 4)
    cache = GraphCache(max_graphs=8, admit_at=at, max_seen=64)
    key = ("image", random.randint(1, 100))
    got = [sighted(cache, key) for _ in range(at + 2)]
    assert got[: at - 1] == [None] * (at - 1) and got[at - 1] is not None
    assert all(g is got[at - 1] for g in got[at:]) and cache.pool == "pool"
    assert cache.counts == {"captures": 1, "replays": 2, "failures": 0, "evictions": 0, "refused": 0}
    assert key in cache and len(cache) == 1 and cache.sightings(key) == at


def test_due_changes_nothing_and_sightings_are_bounded():
    cache = GraphCache(max_graphs=4, admit_at=2, max_seen=3)
    assert not cache.due("a")
    cache.sight("a")
    assert cache.due("a") and cache.due("a") and cache.sightings("a") == 1
    for k in "bcd":  # three newer layouts push the oldest sighting out
        cache.sight(k)
    assert cache.sightings("a") == 0 and not cache.due("a")


def test_the_least_recently_used_graph_goes_first():
    cache = GraphCache(max_graphs=2, admit_at=1, max_seen=16)
    for k in "ab":
        sighted(cache, k)
    sighted(cache, "a")  # a is used again: b is the least recent
    sighted(cache, "c")
    assert "a" in cache and "c" in cache and "b" not in cache
    assert [e.key for e in cache.entries()] == ["a", "c"] and cache.counts["evictions"] == 1


def test_a_failed_capture_is_never_tried_again():
    cache = GraphCache(max_graphs=4, admit_at=2, max_seen=16)
    tries = []

    def build():
        tries.append(1)
        raise RuntimeError("uncapturable")

    for _ in range(6):
        if cache.lookup("x") is None and cache.admit("x"):
            assert cache.capture("x", build) is None
    assert len(tries) == 1 and cache.counts["failures"] == 1 and cache.sightings("x") == -1
    assert not cache.due("x") and len(cache) == 0


def test_captures_are_paid_for_by_replays():
    """A layout seen twice and never again spends a token; tokens come back one per ``refill``
    sightings and one per replay; with none left a due capture is refused, counted."""
    cache = GraphCache(max_graphs=64, admit_at=2, max_seen=256, credit=2, refill=4)
    for k in range(10):  # ten layouts, each seen twice in a row
        sighted(cache, k)
        sighted(cache, k)
    c = cache.counts
    assert c["captures"] + c["refused"] == 10 and c["refused"] > 0
    assert c["captures"] <= 2 + 20 // 4 and 0 <= cache.credit < 1
    before = c["captures"]
    for _ in range(8):  # one layout again and again: captured once a token comes, then replayed
        sighted(cache, "hot")
    assert cache.counts["captures"] == before + 1 and cache.counts["replays"] >= 4 and cache.credit >= 1
    cache.reset_admission()
    assert cache.credit == 2 and cache.sightings(0) == 0 and "hot" in cache  # graphs are kept
    cache.clear()
    assert len(cache) == 0


@pytest.mark.parametrize("bad", [dict(max_graphs=0), dict(admit_at=True), dict(max_seen=1.5), dict(refill=0),
                                 dict(credit=-1)])
def test_bad_bounds_are_refused(bad):
    args = dict(max_graphs=2, admit_at=2, max_seen=8) | bad
    with pytest.raises(ValueError, match=next(iter(bad))):
        GraphCache(**args)


def test_no_collection_holds_the_collector_off_and_restores_it():
    """Captures run with Python's cyclic collector off (a collection could destroy a dropped
    runtime's graph mid-capture and invalidate it); it comes back as it was, after an error too."""
    import gc

    from omnienc.cuda.graphs import no_collection

    was = gc.isenabled()
    try:
        gc.enable()
        with no_collection():
            assert not gc.isenabled()
        assert gc.isenabled()
        with pytest.raises(RuntimeError), no_collection():
            raise RuntimeError("a failed capture")
        assert gc.isenabled()
        gc.disable()
        with no_collection():
            assert not gc.isenabled()
        assert not gc.isenabled()  # off before: stays off
    finally:
        (gc.enable if was else gc.disable)()
