"""Packing: demand computation, table-driven pack cases and property tests (CPU, pure Python)."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omnienc.runtime.grid import Bucket
from omnienc.runtime.packing import BucketSet, Demand, Pack, audio_demand, eager_groups, pack, vision_demand

B, D = Bucket, Demand


@pytest.mark.parametrize(
    "grid_thw, expected",
    [
        ([(1, 14, 14)], D(196, 1)),
        ([(1, 28, 28), (2, 16, 24)], D(784 + 768, 3)),
        ([(8, 28, 28)], D(6272, 8)),  # 16-frame 448x448 video
        ([[1, 46, 80]], D(3680, 1)),
    ],
)
def test_vision_demand(grid_thw, expected):
    assert vision_demand(grid_thw) == expected


@pytest.mark.parametrize(
    "frames, expected",
    [([1000], D(1000, 1)), ([1000, 370], D(1400, 2)), ([1], D(100, 1)), ([3001], D(3100, 1))],
)
def test_audio_demand(frames, expected):
    assert audio_demand(frames) == expected


@pytest.mark.parametrize(
    "grid_thw, match",
    [([], "empty"), ([(1, 14, 15)], "even"), ([(0, 14, 14)], ">= 1"), ([(1, 14)], r"\(t, h, w\)"),
     ([(True, 2, 2)], "boolean"), ([(1.0, 2, 2)], "not an integer")],
)
def test_vision_demand_errors(grid_thw, match):
    with pytest.raises(ValueError, match=match):
        vision_demand(grid_thw)


@pytest.mark.parametrize("frames, match", [([], "empty"), ([0], ">= 1"), ([10.5], "not an integer")])
def test_audio_demand_errors(frames, match):
    with pytest.raises(ValueError, match=match):
        audio_demand(frames)


# (demands, buckets, expected packs as (bucket, members, size, batch))
PACK_CASES = {
    "empty": ([], [B(1024, 4)], []),
    "no buckets: all eager": ([D(10, 1), D(20, 2)], [], [(None, (0,), 10, 1), (None, (1,), 20, 2)]),
    "one fits smallest": ([D(100, 1)], [B(1024, 4), B(256, 2)], [(B(256, 2), (0,), 100, 1)]),
    "smallest by size then batch": (
        [D(500, 2)], [B(1024, 1), B(1024, 4), B(512, 8), B(512, 2)], [(B(512, 2), (0,), 500, 2)]),
    "batch rules out the smaller size": (
        [D(600, 2)], [B(1024, 1), B(1024, 4), B(512, 8)], [(B(1024, 4), (0,), 600, 2)]),
    "too big in size: eager": ([D(5000, 1), D(100, 1)], [B(1024, 4)],
                               [(None, (0,), 5000, 1), (B(1024, 4), (1,), 100, 1)]),
    "too many segments: eager": ([D(100, 9)], [B(1024, 8)], [(None, (0,), 100, 9)]),
    "first-fit decreasing": (
        [D(600, 1), D(500, 1), D(400, 1), D(300, 1)], [B(1024, 8)],
        [(B(1024, 8), (0, 2), 1000, 2), (B(1024, 8), (1, 3), 800, 2)]),
    "batch limit splits bins": (
        [D(100, 1)] * 4, [B(1024, 2)], [(B(1024, 2), (0, 1), 200, 2), (B(1024, 2), (2, 3), 200, 2)]),
    "bin gets the smallest bucket": (
        [D(200, 1), D(200, 1)], [B(256, 1), B(512, 2), B(1024, 4)], [(B(512, 2), (0, 1), 400, 2)]),
    "max size and max batch in different buckets": (
        [D(200, 4), D(800, 1)], [B(1024, 1), B(256, 8)],
        [(B(256, 8), (0,), 200, 4), (B(1024, 1), (1,), 800, 1)]),
    "ordered by first member": (
        [D(100, 1), D(900, 1), D(200, 1)], [B(1024, 2)],
        [(B(1024, 2), (0, 1), 1000, 2), (B(1024, 2), (2,), 200, 1)]),
    "ties broken by index": ([D(300, 1)] * 3, [B(600, 4)],
                             [(B(600, 4), (0, 1), 600, 2), (B(600, 4), (2,), 300, 1)]),
}


@pytest.mark.parametrize("demands, buckets, expected", PACK_CASES.values(), ids=PACK_CASES.keys())
def test_pack_table(demands, buckets, expected):
    assert pack(demands, buckets) == [Pack(*e) for e in expected]


def test_padded_share():
    assert Pack(B(1024, 4), (0,), 768, 1).padded_share == 0.25
    assert Pack(None, (0,), 5000, 1).padded_share == 0.0


def test_demand_rejects_empty():
    with pytest.raises(ValueError):
        Demand(0, 1)


demands_st = st.lists(st.builds(Demand, st.integers(1, 3000), st.integers(1, 20)), max_size=40)
buckets_st = st.lists(st.builds(Bucket, st.integers(1, 4000), st.integers(1, 16)), max_size=6)


def _holds(b: Bucket, d: Demand) -> bool:
    return b.size >= d.size and b.batch >= d.batch


@settings(max_examples=300, deadline=None)
@given(demands_st, buckets_st)
def test_pack_properties(demands, buckets):
    packs = pack(demands, buckets)
    members = [i for r in packs for i in r.members]
    assert sorted(members) == list(range(len(demands)))  # each request exactly once
    assert [r.members[0] for r in packs] == sorted(r.members[0] for r in packs)
    for r in packs:
        assert list(r.members) == sorted(r.members)
        assert r.size == sum(demands[i].size for i in r.members)
        assert r.batch == sum(demands[i].batch for i in r.members)
        if r.bucket is None:  # eager only when nothing fits the request alone
            assert len(r.members) == 1
            assert not any(_holds(b, demands[r.members[0]]) for b in buckets)
        else:
            assert r.bucket in buckets
            assert r.size <= r.bucket.size and r.batch <= r.bucket.batch  # never overfilled
            smaller = [b for b in buckets if b < r.bucket]
            assert not any(_holds(b, Demand(r.size, r.batch)) for b in smaller)  # smallest bucket
    for i, d in enumerate(demands):  # what fits some bucket is never eager
        if any(_holds(b, d) for b in buckets):
            assert any(r.bucket is not None and i in r.members for r in packs)


@settings(max_examples=100, deadline=None)
@given(demands_st, buckets_st, st.randoms(use_true_random=False))
def test_pack_deterministic_and_bucket_order_free(demands, buckets, rnd):
    shuffled = list(buckets) + list(buckets[:1])  # duplicates are ignored
    rnd.shuffle(shuffled)
    assert pack(demands, buckets) == pack(demands, buckets) == pack(demands, shuffled)
    assert pack(demands, BucketSet(shuffled)) == pack(demands, buckets)


def test_pack_fewer_packs_than_requests():
    rng = random.Random(0)
    demands = [D(rng.randint(100, 1000), 1) for _ in range(50)]
    packs = pack(demands, [B(16384, 64)])
    assert len(packs) == -(-sum(d.size for d in demands) // 16384)  # all fit a few bins


def _r(first: int, size: int) -> Pack:
    return Pack(B(4096, 8), (first,), size, 1)


# (sizes, mergeable, cap, expected groups as lists of first members)
EAGER_GROUP_CASES = {
    "all merge under the cap": ([100, 200, 300], [1, 1, 1], 1000, [[0, 1, 2]]),
    "others stay alone, in place": ([100, 200, 300], [1, 0, 1], 1000, [[0, 2], [1]]),
    "first fit over the cap": ([600, 600, 300, 400], [1, 1, 1, 1], 1000, [[0, 2], [1, 3]]),
    "a pack over the cap alone": ([1500, 100], [1, 1], 1000, [[0], [1]]),
    "cap 0 merges nothing": ([100, 200], [1, 1], 0, [[0], [1]]),
    "nothing mergeable": ([100, 200], [0, 0], 1000, [[0], [1]]),
    "empty": ([], [], 1000, []),
}


@pytest.mark.parametrize("sizes, mergeable, cap, expected", EAGER_GROUP_CASES.values(), ids=EAGER_GROUP_CASES.keys())
def test_eager_groups_table(sizes, mergeable, cap, expected):
    reps = [_r(i, n) for i, n in enumerate(sizes)]
    groups = eager_groups(reps, [bool(m) for m in mergeable], cap)
    assert [[r.members[0] for r in g] for g in groups] == expected


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 3000), st.booleans()), max_size=30), st.integers(0, 8000))
def test_eager_groups_properties(items, cap):
    reps = [_r(i, n) for i, (n, _) in enumerate(items)]
    groups = eager_groups(reps, [m for _, m in items], cap)
    assert sorted(r.members[0] for g in groups for r in g) == list(range(len(items)))  # each once
    for g in groups:
        if len(g) > 1:  # merged: only mergeable packs, within the cap
            assert all(items[r.members[0]][1] for r in g) and sum(r.size for r in g) <= cap
    with pytest.raises(ValueError, match="flags"):
        eager_groups(reps, [True] * (len(reps) + 1), cap)
