"""EncoderService on the CPU: arguments, backpressure, worker death, close, asyncio, non-finite outputs,
and dispatch over several runtimes (fake devices of different speeds, failures, output device)."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from concurrent.futures import CancelledError, ThreadPoolExecutor

import pytest
import torch
from conftest import hf_and_native_audio, hf_and_native_vision
from test_runtime import (  # noqa: F401 (encoders: the same fixture)
    GRID, audio_request, check_against_direct, encoders, random_mix, vision_request,
)

from omnienc.runtime import EncoderRuntime, EncoderService, ServiceBusy, ServiceClosed
from omnienc.runtime.requests import NonFiniteOutput


@pytest.fixture()
def runtime(encoders):
    vis, aud = encoders
    return EncoderRuntime(vision=vis, audio=aud, grid=GRID)


def small(encoders, rng):
    vis, aud = encoders
    if rng.random() < 0.5:
        return vision_request([[1, 2 * rng.randint(1, 3), 2 * rng.randint(1, 3)]], vis.config)
    return audio_request([rng.randint(1, 180)], aud.config)


class Gate:
    """Makes ``runtime.launch`` block until released (an encode that is stuck, then resumes)."""

    def __init__(self, runtime, monkeypatch):
        self.release, self.entered = threading.Event(), threading.Event()
        real = runtime.launch

        def launch(reqs, shapes=None):
            self.entered.set()
            self.release.wait(30)
            return real(reqs, shapes)

        monkeypatch.setattr(runtime, "launch", launch)


@pytest.mark.parametrize("kwargs, match", [
    ({"max_batch": 0}, "max_batch"), ({"max_batch": -1}, "max_batch"), ({"max_batch": 2.5}, "max_batch"),
    ({"max_batch": True}, "max_batch"), ({"max_pending": 0}, "max_pending"), ({"max_pending": "8"}, "max_pending"),
    ({"max_wait_ms": -1}, "max_wait_ms"), ({"max_wait_ms": float("inf")}, "max_wait_ms"),
    ({"max_wait_ms": float("nan")}, "max_wait_ms"), ({"max_wait_ms": "2"}, "max_wait_ms"),
])
def test_arguments_are_validated_at_construction(runtime, kwargs, match):
    with pytest.raises(ValueError, match=match):
        EncoderService(runtime, **kwargs)


def test_submit_blocks_then_raises_busy_and_memory_stays_bounded(encoders, runtime, monkeypatch):
    gate = Gate(runtime, monkeypatch)
    rng = random.Random()
    svc = EncoderService(runtime, max_wait_ms=0, max_pending=3)
    reqs = [small(encoders, rng) for _ in range(3)]
    futures = [svc.submit(r) for r in reqs]
    assert gate.entered.wait(10)
    with pytest.raises(ServiceBusy, match="max_pending=3"):
        svc.submit(small(encoders, rng), timeout=0)
    t0 = time.monotonic()
    with pytest.raises(ServiceBusy):
        svc.submit(small(encoders, rng), timeout=0.2)
    assert 0.15 <= time.monotonic() - t0 < 5
    later = small(encoders, rng)
    threading.Timer(0.2, gate.release.set).start()
    f = svc.submit(later, timeout=10)  # waits for room, then is accepted
    assert svc.close(timeout=30)
    check_against_direct(encoders, reqs + [later], [g.result(0) for g in futures + [f]])
    assert svc.stats()["busy_rejections"] == 2


def test_overload_from_16_threads_stays_bounded_and_every_accepted_request_is_right(encoders, runtime):
    """16 threads push 40 requests each at a service of max_pending 8: outstanding never exceeds 8,
    clients that get ServiceBusy retry, every accepted future resolves to its own result."""
    rng = random.Random()
    per_thread = [[small(encoders, rng) for _ in range(40)] for _ in range(16)]
    svc = EncoderService(runtime, max_wait_ms=1, max_batch=8, max_pending=8)
    peak, busy = [0], [0]

    def client(reqs):
        out = []
        for r in reqs:
            while True:
                try:
                    out.append(svc.submit(r, timeout=0.01))
                    break
                except ServiceBusy:
                    busy[0] += 1
            peak[0] = max(peak[0], svc.stats()["outstanding"])
        return [f.result(60) for f in out]

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(client, per_thread))
    assert svc.close(timeout=30)
    assert peak[0] <= 8 and busy[0] > 0
    for reqs, outs in zip(per_thread, results):
        check_against_direct(encoders, reqs[::5], outs[::5])


def test_a_worker_that_dies_fails_every_future_and_closes(encoders, runtime, monkeypatch):
    class Boom(BaseException):
        pass

    gate = Gate(runtime, monkeypatch)
    real = runtime.launch

    def launch(reqs, shapes=None):
        real(reqs, shapes)
        raise Boom("injected")

    rng = random.Random()
    svc = EncoderService(runtime, max_wait_ms=0, max_batch=1)
    futures = [svc.submit(small(encoders, rng)) for _ in range(6)]
    assert gate.entered.wait(10)
    monkeypatch.setattr(runtime, "launch", launch)
    gate.release.set()  # the first request ran before the death: it may have been resolved already
    for f in futures[1:]:
        with pytest.raises(ServiceClosed, match="worker thread died") as e:
            f.result(30)
        assert isinstance(e.value.__cause__, Boom)
    with pytest.raises(ServiceClosed):
        svc.submit(small(encoders, rng))
    assert svc.close(timeout=10)


def test_close_returns_within_its_timeout_when_an_encode_is_stuck(encoders, runtime, monkeypatch):
    gate = Gate(runtime, monkeypatch)
    svc = EncoderService(runtime, max_wait_ms=0)
    f = svc.submit(small(encoders, random.Random()))
    assert gate.entered.wait(10)
    t0 = time.monotonic()
    assert svc.close(timeout=0.3) is False
    assert time.monotonic() - t0 < 2
    gate.release.set()
    assert f.result(30) is not None
    assert svc.close(timeout=30) is True


def test_encode_async_from_many_tasks_and_cancellation(encoders, runtime, monkeypatch):
    rng = random.Random()
    reqs = [small(encoders, rng) for _ in range(40)]

    async def many(svc):
        return await asyncio.gather(*(svc.encode_async(r) for r in reqs))

    with EncoderService(runtime, max_wait_ms=1, max_pending=8) as svc:
        outs = asyncio.run(many(svc))
    check_against_direct(encoders, reqs, outs)

    gate = Gate(runtime, monkeypatch)
    svc = EncoderService(runtime, max_wait_ms=0, max_batch=1)

    async def cancel_queued():
        first = asyncio.ensure_future(svc.encode_async(reqs[0]))
        await asyncio.sleep(0.05)
        assert gate.entered.is_set()  # the first request is running
        second = asyncio.ensure_future(svc.encode_async(reqs[1]))
        await asyncio.sleep(0.05)
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        gate.release.set()
        return await first

    out = asyncio.run(cancel_queued())
    check_against_direct(encoders, reqs[:1], [out])
    assert svc.close(timeout=30)
    assert runtime.stats()["requests"] == 40 + 1  # the cancelled request never ran


def test_non_finite_output_fails_only_its_request():
    """A float16 encoder overflows on a finite input of 1e5: that request fails naming itself, the
    others of its batch are right; a NaN input is named as such."""
    _, vis = hf_and_native_vision()
    _, aud = hf_and_native_audio()
    vis, aud = vis.half(), aud.half()
    rt = EncoderRuntime(vision=vis, audio=aud, grid=GRID)
    good = [vision_request([[1, 4, 4]], vis.config), audio_request([150], aud.config)]
    hot_v = vision_request([[1, 4, 6]], vis.config)
    hot_v.pixel_values.fill_(1e5)
    hot_a = audio_request([120], aud.config)
    hot_a.input_features.fill_(1e5)
    batch = rt.launch([good[0], hot_v, good[1], hot_a])
    results = batch.results()
    assert isinstance(results[1], NonFiniteOutput) and "request 1 (VisionRequest)" in str(results[1])
    assert isinstance(results[3], NonFiniteOutput) and "request 3 (AudioRequest)" in str(results[3])
    for r, o in zip(good, (results[0], results[2])):
        ref = vis(r.pixel_values, r.grid_thw)[0] if hasattr(r, "pixel_values") else aud(r.input_features, r.feature_lens)
        assert torch.isfinite(o.embeds).all() and torch.allclose(o.embeds.float(), ref.float(), atol=1e-2)
    with pytest.raises(NonFiniteOutput, match="request 1"):
        rt.encode([good[0], hot_v])
    with EncoderService(rt, max_wait_ms=5) as svc:
        f_good, f_hot = svc.submit(good[1]), svc.submit(hot_a)
        with pytest.raises(NonFiniteOutput, match="request"):
            f_hot.result(30)
        assert torch.isfinite(f_good.result(30).embeds).all()


def test_inputs_checked_on_the_device_are_named_when_not_finite(encoders, runtime):
    """On CUDA finiteness is checked on the outputs; the error then names the non-finite input field.
    Simulated on the CPU by skipping the host check."""
    vis, aud = encoders
    bad = audio_request([140], aud.config)
    bad.input_features[3, 7] = float("nan")
    good = vision_request([[1, 4, 4]], vis.config)
    shapes = [[(1, 4, 4)], [140]]  # as validate returns them, without its host finiteness check
    results = runtime.launch([good, bad], shapes).results()
    assert isinstance(results[1], ValueError) and "request 1 (AudioRequest): field 'input_features' holds NaN" in str(results[1])
    check_against_direct(encoders, [good], [results[0]])


def test_stats_keep_no_per_run_records(encoders, runtime):
    rng = random.Random()
    for _ in range(30):
        runtime.encode([small(encoders, rng) for _ in range(3)])
    assert all(len(lane.timings) == 0 for lane in runtime.lanes())
    assert runtime.stats()["requests"] == 90


# --- several runtimes --------------------------------------------------------------------------


class FakeDevice:
    """A runtime on a fake device that takes ``ms_per_request`` per request on its 'GPU' (a timer):
    launch returns at once, the batch is done later. Validation and packing are the real runtime's."""

    def __init__(self, real: EncoderRuntime, name: str, ms_per_request: float, fail: bool = False):
        self.real, self.device, self.grid = real, torch.device("cpu"), real.grid
        self.name, self.ms, self.fail = name, ms_per_request, fail
        self.seen: list = []
        self._busy_until = 0.0

    def __getattr__(self, name):  # lanes, route, validate: the real runtime's
        return getattr(self.real, name)

    def launch(self, reqs, shapes=None):
        if self.fail:
            raise RuntimeError(f"{self.name}: injected device error")
        self.seen += reqs
        start = max(time.monotonic(), self._busy_until)
        self._busy_until = start + self.ms * len(reqs) / 1e3
        return FakeBatch([(self.name, id(r)) for r in reqs], self._busy_until)


class FakeBatch:
    def __init__(self, outputs, ready_at):
        self.outputs, self.ready_at = outputs, ready_at

    def results(self):
        time.sleep(max(self.ready_at - time.monotonic(), 0.0))
        return self.outputs


@pytest.fixture()
def fakes(runtime):
    def make(*specs):
        devs = [FakeDevice(runtime, f"fake{i}", ms, fail) for i, (ms, fail) in enumerate(specs)]
        for i, d in enumerate(devs):
            d.device = _FakeDeviceName(f"fake:{i}")
        return devs

    return make


class _FakeDeviceName:
    def __init__(self, name):
        self.name, self.type = name, "cpu"

    def __str__(self):
        return self.name


def test_dispatch_sends_more_work_to_the_faster_device(encoders, fakes):
    fast, slow = fakes((1.0, False), (4.0, False))
    rng = random.Random()
    reqs = [small(encoders, rng) for _ in range(400)]
    with EncoderService([fast, slow], max_wait_ms=0.5, max_batch=8) as svc:
        futures = [svc.submit(r) for r in reqs]
        outs = [f.result(60) for f in futures]
    assert [o[1] for o in outs] == [id(r) for r in reqs]  # each future got its own request's result
    assert len(fast.seen) + len(slow.seen) == 400
    assert len(fast.seen) >= 2 * len(slow.seen), (len(fast.seen), len(slow.seen))
    devices = svc.stats()["devices"]
    assert [d["requests"] for d in devices] == [len(fast.seen), len(slow.seen)]


def test_a_failing_device_is_marked_unhealthy_and_its_work_retried(encoders, fakes):
    good, bad = fakes((0.5, False), (0.5, True))
    rng = random.Random()
    reqs = [small(encoders, rng) for _ in range(60)]
    with EncoderService([bad, good], max_wait_ms=0.5, max_batch=4) as svc:
        outs = [f.result(60) for f in [svc.submit(r) for r in reqs]]
        stats = svc.stats()["devices"]
    assert all(o[0] == "fake0" for o in outs) and len(good.seen) == 60
    assert stats[0]["healthy"] is False and "injected device error" in stats[0]["error"]  # bad is first
    assert stats[1]["healthy"] is True


def test_output_device_gets_a_copy_and_one_runtime_works_as_a_list(encoders, runtime):
    rng = random.Random()
    reqs = [small(encoders, rng) for _ in range(6)]
    with EncoderService([runtime], max_wait_ms=1, output_device="meta") as svc:
        outs = [f.result(30) for f in [svc.submit(r) for r in reqs]]
    assert all(o.embeds.device.type == "meta" for o in outs)
    assert all(t.device.type == "meta" for o in outs for t in getattr(o, "deepstack", []))
    with pytest.raises(ValueError, match="each runtime once"):
        EncoderService([runtime, runtime])


def test_the_service_batches_by_the_simulators_rule(encoders, runtime, monkeypatch):
    """Requests arrive in random clusters (gaps within a cluster well under quiet_ms, or well over it
and under max_wait; between clusters well over max_wait): the batches the service forms are exactly
    ``group_arrivals`` of the same times (``close_on_return`` off: the simulator cannot replay it)."""
    from omnienc.runtime.batching import BatchPolicy, group_arrivals

    rng = random.Random()
    policy = BatchPolicy(max_wait_ms=120, max_batch=int(rng.choice([3, 4, 100])), quiet_ms=20)
    times, t = [], 0.0
    for _ in range(5):
        for _ in range(rng.randint(1, 6)):
            times.append(t)
            t += rng.uniform(0.0, 0.006) if rng.random() < 0.8 else rng.uniform(0.045, 0.055)
        t += 0.3
    reqs = [small(encoders, rng) for _ in times]
    seen = []
    real = runtime.launch
    monkeypatch.setattr(runtime, "launch", lambda rs, shapes=None: (seen.append([id(r) for r in rs]), real(rs, shapes))[1])
    with EncoderService(runtime, max_wait_ms=policy.max_wait_ms, max_batch=policy.max_batch,
                        quiet_ms=policy.quiet_ms, close_on_return=False) as svc:  # a rule of completions
        t0, futures = time.monotonic(), []
        for at, r in zip(times, reqs):
            time.sleep(max(t0 + at - time.monotonic(), 0.0))
            futures.append(svc.submit(r))
        [f.result(30) for f in futures]
    expect = [sorted(id(reqs[i]) for i in g) for g in group_arrivals(times, policy)]
    assert [sorted(b) for b in seen] == expect


def test_a_burst_goes_after_quiet_ms_not_max_wait(encoders, runtime):
    """Requests submitted together form one batch that closes quiet_ms after the last of them, long
    before max_wait_ms; with quiet_ms=None the batch waits for max_wait_ms."""
    rng = random.Random()
    reqs = [small(encoders, rng) for _ in range(3)]
    runtime.encode(reqs)  # warm
    for quiet, lo, hi in ((5.0, 0.0, 0.3), (None, 0.4, 5.0)):
        with EncoderService(runtime, max_wait_ms=400, quiet_ms=quiet) as svc:
            t0 = time.monotonic()
            futures = [svc.submit(r) for r in reqs]
            outs = [f.result(30) for f in futures]
            took = time.monotonic() - t0
            assert svc.stats()["batches"] == 1
        assert lo <= took < hi, (quiet, took)
    check_against_direct(encoders, reqs, outs)


def test_closed_loop_on_a_fake_gpu_batches_the_clients_together():
    """benchmarks/service_fake_bench: 8 closed-loop clients over a fake GPU get served in batches of
    several requests (not one by one), and the report's figures are consistent."""
    from service_fake_bench import run

    r = run("audio10s", 0.5, 0.1, max_wait_ms=2.0, max_batch=64)
    assert r["requests"] > 0 and r["requests_per_batch"] > 2
    assert r["ratio"] == pytest.approx(r["requests_per_s"] / r["encode_all_requests_per_s"])
