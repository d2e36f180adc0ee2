"""The service's batching rule (runtime/batching.py) on its own and applied to traces."""

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omnienc.runtime.batching import BatchPolicy, group_arrivals, group_windows


@pytest.mark.parametrize("kw, fragment", [
    ({"max_batch": 0}, ">= 1"), ({"max_batch": -3}, ">= 1"), ({"max_batch": 1.5}, "integer"),
    ({"max_batch": True}, "integer"), ({"max_batch": "8"}, "integer"),
    ({"max_wait_ms": -1}, ">= 0"), ({"max_wait_ms": math.nan}, "finite"), ({"max_wait_ms": math.inf}, "finite"),
    ({"max_wait_ms": "2"}, "finite"), ({"max_wait_ms": False}, "finite"),
    ({"quiet_ms": -0.1}, "quiet_ms"), ({"quiet_ms": math.inf}, "quiet_ms"), ({"quiet_ms": "1"}, "quiet_ms"),
])
def test_policy_validation(kw, fragment):
    with pytest.raises(ValueError, match=fragment):
        BatchPolicy(**kw)


def test_policy_rule():
    p = BatchPolicy(max_wait_ms=2.5, max_batch=3)
    assert BatchPolicy() == BatchPolicy(2.0, 64) and p.max_wait_ms == 2.5
    assert p.deadline(10.0) == pytest.approx(10.0025)
    assert not p.full(2) and p.full(3) and p.full(4)
    assert BatchPolicy(0, 1).deadline(4.0) == 4.0 and BatchPolicy(0, 1).full(1)
    q = BatchPolicy(max_wait_ms=2.0, quiet_ms=0.5)
    assert q.close_at(1.0, 1.0012) == pytest.approx(1.0017)  # quiet after the last arrival
    assert q.close_at(1.0, 1.0018) == pytest.approx(1.002)  # but never past the deadline
    assert BatchPolicy(quiet_ms=None).close_at(1.0, 1.0019) == pytest.approx(1.002)


def test_group_arrivals_quiet():
    """A burst closes quiet_ms after its last arrival, not at the deadline; a gap longer than
    quiet_ms splits; the deadline and max_batch still bound a batch."""
    p = BatchPolicy(max_wait_ms=2, max_batch=4, quiet_ms=0.5)
    t = [0.0, 0.0002, 0.0004, 0.0006, 0.0007, 0.0100, 0.0104, 0.0110, 0.0113, 0.0200]
    # 0..3 fill a batch; 4 is alone (5 comes 9.3 ms later); 5, 6: the 0.6 ms gap to 7 splits;
    # 7, 8 within 0.3 ms; 9 alone.
    assert group_arrivals(t, p) == [[0, 1, 2, 3], [4], [5, 6], [7, 8], [9]]
    chain = [i * 0.0004 for i in range(8)]  # never quiet: the deadline (2 ms) closes the batch
    assert group_arrivals(chain, BatchPolicy(2, 64, 0.5)) == [[0, 1, 2, 3, 4, 5], [6, 7]]
    # Busy 3 ms after each batch: whatever arrived meanwhile goes when the worker frees.
    assert group_arrivals(t, p, busy_ms=lambda g: 3.0) == [[0, 1, 2, 3], [4], [5, 6], [7, 8], [9]]
    assert group_arrivals(t, p, busy_ms=lambda g: 12.0) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_group_arrivals_by_hand():
    p = BatchPolicy(max_wait_ms=2, max_batch=3, quiet_ms=None)
    t = [0.0, 0.001, 0.002, 0.0025, 0.010, 0.0101, 0.0102, 0.0103, 0.0104]
    # [0, 1, 2]: the deadline 0.002 takes the arrival at it; 3 opens the next batch, alone until 0.0045;
    # 4..8 arrive within 0.4 ms: the first three fill a batch at once, the other two wait for 0.0123.
    assert group_arrivals(t, p) == [[0, 1, 2], [3], [4, 5, 6], [7, 8]]
    shuffled = [5, 0, 8, 2, 7, 1, 3, 6, 4]  # any input order: indices refer to the input
    assert group_arrivals([t[i] for i in shuffled], p) == [[shuffled.index(i) for i in g] for g in
                                                           group_arrivals(t, p)]
    # Busy for 5 ms after each batch: 3 arrives during [0, 1, 2]'s run and waited past its deadline,
    # so it goes at once at 0.007 (alone: 4 comes later); then as before.
    assert group_arrivals(t, p, busy_ms=lambda g: 5.0) == [[0, 1, 2], [3], [4, 5, 6], [7, 8]]
    # Busy for 9 ms: 3 and 4..8 all pending when the worker frees at 0.011 -> full batches at once.
    assert group_arrivals(t, p, busy_ms=lambda g: 9.0) == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert group_arrivals([1.0, 1.0, 1.0], BatchPolicy(0, 2, None)) == [[0, 1], [2]]  # ties: by index
    assert group_arrivals([], p) == []
    with pytest.raises(ValueError, match="finite"):
        group_arrivals([0.0, math.nan], p)


def reference(times, policy, busy_ms=None):
    """The worker, step by step: free -> wait for a pending request -> wait for the deadline of the
    first pending one or a full batch -> run (busy) -> repeat. Written as an event loop over time."""
    order = sorted(range(len(times)), key=lambda i: (times[i], i))
    pending, out, now, nxt = [], [], -math.inf, 0
    while nxt < len(order) or pending:
        if not pending:  # idle: jump to the next arrival
            now = max(now, times[order[nxt]])
        while nxt < len(order) and times[order[nxt]] <= now:
            pending.append(order[nxt])
            nxt += 1
        deadline = times[pending[0]] + policy.max_wait_ms / 1e3
        if policy.quiet_ms is not None:  # quiet: no arrival for quiet_ms after the last pending one
            deadline = min(deadline, times[pending[-1]] + policy.quiet_ms / 1e3)
        if len(pending) < policy.max_batch and now < deadline:
            upcoming = times[order[nxt]] if nxt < len(order) else math.inf
            now = min(deadline, upcoming)  # wait for the close or the next arrival
            if upcoming <= deadline:
                continue
            while nxt < len(order) and times[order[nxt]] <= now:
                pending.append(order[nxt])
                nxt += 1
        batch, pending = pending[: policy.max_batch], pending[policy.max_batch :]
        out.append(batch)
        if busy_ms is not None:
            now += busy_ms(batch) / 1e3
    return out


@settings(max_examples=150, deadline=None)
@given(
    gaps=st.lists(st.floats(0, 0.004), max_size=40),
    wait=st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.7]),
    cap=st.integers(1, 6),
    busy=st.sampled_from([None, 0.0, 0.8, 2.5, 7.0]),
    quiet=st.sampled_from([None, 0.0, 0.3, 1.0]),
    seed=st.integers(0, 10**6),
)
def test_group_arrivals_matches_the_worker(gaps, wait, cap, busy, quiet, seed):
    """On random arrival streams (bursts included), the rule as a trace function equals the worker
    simulated event by event; every request is in exactly one batch, each at most max_batch."""
    times = [round(sum(gaps[: i + 1]), 6) for i in range(len(gaps))]
    random.Random(seed).shuffle(times)
    policy = BatchPolicy(wait, cap, quiet)
    busy_ms = None if busy is None else (lambda g: busy * len(g))
    got = group_arrivals(times, policy, busy_ms)
    assert got == reference(times, policy, busy_ms)
    assert sorted(i for g in got for i in g) == list(range(len(times)))
    assert all(1 <= len(g) <= cap for g in got)
    if busy is None:  # an idle worker never holds a request past its batch's deadline
        for g in got:
            assert max(times[i] for i in g) <= policy.deadline(min(times[i] for i in g)) + 1e-12


def test_group_windows():
    t = [0.0, 0.0099999, 0.01, 0.03, 0.029, 0.021, 0.07]  # 0.07 * 1000 is 70.00000000000001: window 7
    assert group_windows(t, 10) == [[0, 1], [2], [5, 4], [3], [6]]
    assert group_windows(t, 0) == [[0], [1], [2], [5], [4], [3], [6]]
    for bad in (-1, math.nan, math.inf, True):
        with pytest.raises(ValueError, match="step_ms"):
            group_windows(t, bad)
