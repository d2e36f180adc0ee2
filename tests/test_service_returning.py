"""EncoderService's close for returning clients (``close_on_return``), on a fake GPU on the CPU:
closed-loop clients that are all back go at once, fewer wait out ``max_wait_ms``, overload still
fills batches, and nothing hangs."""

from __future__ import annotations

import statistics
import threading
import time

import pytest

from omnienc.runtime import EncoderService
from omnienc.runtime.service import default_cost
from service_fake_bench import FakeRuntime, requests_for, tiny_runtime

TIMEOUT_S = 20


@pytest.fixture(scope="module")
def real():
    return tiny_runtime()


class Recording(FakeRuntime):
    """A fake GPU (2 ms per batch + 0.1 ms per request, no host time) that records batch sizes."""

    def __init__(self, real):
        super().__init__(real, fixed_ms=2.0, per_request_ms=0.1, host_ms=0.0)
        self.sizes: list[int] = []

    def launch(self, requests, shapes=None):
        self.sizes.append(len(requests))
        return super().launch(requests, shapes)


def closed_loop(svc: EncoderService, requests: list, rounds: list[int]) -> list[list[float]]:
    """Client i submits ``requests[i]``, waits for it and submits again, ``rounds[i]`` times, all
    starting together; returns each client's completion times (monotonic seconds)."""
    done: list[list[float]] = [[] for _ in requests]
    errors: list[BaseException] = []
    start = threading.Barrier(len(requests))

    def client(i: int) -> None:
        try:
            start.wait(TIMEOUT_S)
            for _ in range(rounds[i]):
                svc.submit(requests[i]).result(TIMEOUT_S)
                done[i].append(time.monotonic())
        except BaseException as e:  # noqa: BLE001 - re-raised below
            errors.append(e)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT_S)
    assert not any(t.is_alive() for t in threads), "a client hung"
    if errors:
        raise errors[0]
    return done


def cycle_ms(done: list[list[float]]) -> float:
    """Median time between a client's consecutive results, ms."""
    return statistics.median(1e3 * (b - a) for ts in done for a, b in zip(ts, ts[1:]))


@pytest.mark.parametrize("close_on_return", [True, False])
def test_eight_returning_clients_do_not_wait_out_max_wait(real, close_on_return):
    """8 closed-loop clients, max_wait_ms=50: with close_on_return each batch after the first (which
    has no completions to count yet) closes as soon as all 8 are back, a cycle far below 50 ms;
    without it every batch waits for its deadline."""
    fake = Recording(real)
    rounds = 10 if close_on_return else 3
    with EncoderService(fake, max_wait_ms=50, cost=default_cost, close_on_return=close_on_return) as svc:
        done = closed_loop(svc, requests_for(real, "audio10s", 8), [rounds] * 8)
    assert fake.sizes == [8] * rounds
    if close_on_return:
        assert cycle_ms(done) < 15
    else:
        assert cycle_ms(done) >= 45


def test_a_client_that_does_not_come_back_costs_one_max_wait(real):
    """8 clients answered, 7 come back: that batch waits out max_wait_ms (the bound of every close),
    then counts 7 answered and the 7 go at once from then on."""
    fake = Recording(real)
    with EncoderService(fake, max_wait_ms=60, cost=default_cost) as svc:
        done = closed_loop(svc, requests_for(real, "audio10s", 8), [1] + [6] * 7)
    assert fake.sizes == [8] + [7] * 5
    cycles = [1e3 * (b - a) for ts in done[1:] for a, b in zip(ts, ts[1:])]
    first = [1e3 * (ts[1] - ts[0]) for ts in done[1:]]
    assert min(first) >= 55  # the 7 waited for the deadline once
    assert statistics.median(cycles) < 15  # and then not


def test_overload_still_fills_every_batch(real):
    """32 closed-loop clients, max_batch=8: while requests are plenty, every batch is full (the device
    is never idle with fewer than a batch pending), whatever the rule. Only the tail may close short:
    a client the CPU scheduled late can fall a round behind the others (seen on a loaded 2-core
    machine), and its last requests then have no one left to batch with."""
    fake = Recording(real)
    with EncoderService(fake, max_wait_ms=50, max_batch=8, cost=default_cost) as svc:
        done = closed_loop(svc, requests_for(real, "audio10s", 32), [4] * 32)
    assert sum(fake.sizes) == 128 and all(1 <= n <= 8 for n in fake.sizes)
    assert fake.sizes[:14] == [8] * 14, fake.sizes
    assert all(len(ts) == 4 for ts in done)


def test_close_on_return_is_checked():
    from omnienc.runtime.batching import BatchPolicy

    with pytest.raises(ValueError, match="close_on_return"):
        BatchPolicy(close_on_return=1)
    p = BatchPolicy()
    assert p.returned(pending=8, delivered=8, idle=True)
    assert not p.returned(pending=7, delivered=8, idle=True)
    assert not p.returned(pending=8, delivered=8, idle=False)
    assert not p.returned(pending=3, delivered=0, idle=True)  # nothing delivered: nothing to wait for
    assert not BatchPolicy(close_on_return=False).returned(pending=8, delivered=8, idle=True)


def test_a_closed_loop_window_shorter_than_a_round_still_measures(real):
    """A measuring window shorter than one round (a slow or busy host) stays open until a request is
    back: the closed loop never reports a rate of no requests."""
    from omnienc.tools.service_load import closed_loop as measure_loop

    fake = FakeRuntime(real, fixed_ms=50.0, per_request_ms=0.0, host_ms=0.0)  # a round: >= 50 ms
    got = measure_loop(fake, requests_for(real, "audio10s", 4), 0.0, max_wait_ms=1.0, max_batch=8,
                       cost=default_cost, encode_repeats=1, warmup=0)
    assert got["requests"] > 0 and got["seconds"] > 0 and got["requests_per_s"] > 0
