"""GPU time by CUDA events (host time off CUDA): one call, a median, or runs resolved later."""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Callable

import torch


def elapsed_ms(fn: Callable[[], object], device: torch.device) -> float:
    """Milliseconds of one ``fn()`` started on an idle device: CUDA events around it on CUDA (the
    device synchronized first, the end waited for), the host clock elsewhere."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    """Median milliseconds of one ``fn()`` on the current CUDA stream, calls back to back: CUDA
    events around each, after ``warmup`` calls; one host sync at the end."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(repeats)]
    for start, end in events:
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return statistics.median(start.elapsed_time(end) for start, end in events)


class PendingTimings:
    """Times runs without waiting for them: ``start()`` before a run's work, ``stop()`` right after
    it, ``keep(key, start, stop)`` once the run is counted; ``drain()`` later hands each finished
    run's milliseconds to ``add(key, ms)``. On CUDA ``start``/``stop`` record events and at most
    ``limit`` stay unresolved (past that the oldest is waited for); elsewhere they read the host
    clock and ``keep`` adds at once.
    """

    def __init__(self, cuda: bool, add: Callable[[object, float], None], limit: int):
        self.cuda, self.add, self.limit = cuda, add, limit
        self._pending: deque = deque()

    def start(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def stop(self):
        return self.start()

    def keep(self, key, start, stop) -> None:
        if not self.cuda:
            self.add(key, (stop - start) * 1e3)
            return
        pending = self._pending
        pending.append((key, start, stop))
        while len(pending) > self.limit:
            self._resolve(*pending.popleft())

    def drain(self, wait: bool = False) -> None:
        """Adds finished runs' times (all of them, waiting, if ``wait``)."""
        pending = self._pending
        while pending and (wait or pending[0][2].query()):
            self._resolve(*pending.popleft())

    def __len__(self) -> int:
        """Runs not resolved yet."""
        return len(self._pending)

    def _resolve(self, key, start, stop) -> None:
        stop.synchronize()
        self.add(key, start.elapsed_time(stop))


__all__ = ["PendingTimings", "elapsed_ms", "median_ms"]
