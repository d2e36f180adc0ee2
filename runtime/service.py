"""EncoderService: a thread-safe front door with futures over one EncoderRuntime.

Callers on any thread ``submit`` a request and get a ``concurrent.futures.Future``. One worker thread
waits up to ``max_wait_ms`` after the first pending request to let others arrive, then encodes what
is pending in one ``runtime.launch`` call (so requests of many users share replays) and resolves the
futures. Requests are validated once, at ``submit``: a bad one raises there and never reaches a
batch. The runtime fails only the requests at fault (it retries a failed pack's members alone).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

from .runtime import EncoderRuntime


class ServiceClosed(RuntimeError):
    """The service was closed; it takes no more requests."""


class EncoderService:
    """Batches concurrent requests into runtime calls.

    Args:
        runtime: the runtime (captured or not).
        max_wait_ms: how long the worker waits after the first pending request before running.
        max_batch: at most this many requests per ``encode`` call.
    """

    def __init__(self, runtime: EncoderRuntime, max_wait_ms: float = 2.0, max_batch: int = 64):
        self.runtime = runtime
        self.max_wait_s = max_wait_ms / 1e3
        self.max_batch = max_batch
        self._pending: list[tuple[object, list, Future]] = []
        self._cv = threading.Condition()
        self._closed = False
        self.batches = 0
        self._worker = threading.Thread(target=self._loop, name="omnienc-service", daemon=True)
        self._worker.start()

    def submit(self, request) -> Future:
        """Queues one request; raises ``ValueError`` if it is malformed, ``ServiceClosed`` after close."""
        shape = self.runtime.validate([request])[0]
        future: Future = Future()
        with self._cv:
            if self._closed:
                raise ServiceClosed("EncoderService is closed; create a new one to submit requests")
            self._pending.append((request, shape, future))
            self._cv.notify()
        return future

    def _take(self) -> list[tuple[object, list, Future]] | None:
        with self._cv:
            while not self._pending and not self._closed:
                self._cv.wait()
            if not self._pending:
                return None  # closed and drained
            deadline = time.monotonic() + self.max_wait_s
            while len(self._pending) < self.max_batch and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(left)
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            return batch

    def _loop(self) -> None:
        while (batch := self._take()) is not None:
            live = [(r, s, f) for r, s, f in batch if f.set_running_or_notify_cancel()]
            if not live:
                continue
            self.batches += 1
            try:
                results = self.runtime.launch([r for r, _, _ in live], [s for _, s, _ in live]).results()
            except Exception as e:  # noqa: BLE001 - delivered to every future of the batch
                results = [e] * len(live)
            for (_, _, f), o in zip(live, results):
                if isinstance(o, BaseException):
                    f.set_exception(o)
                else:
                    f.set_result(o)

    def close(self, cancel_pending: bool = False) -> None:
        """Stops taking requests. Pending ones finish (or, with ``cancel_pending``, are cancelled)."""
        with self._cv:
            self._closed = True
            if cancel_pending:
                for _, _, f in self._pending:
                    f.cancel()
                self._pending.clear()
            self._cv.notify_all()
        self._worker.join()

    def __enter__(self) -> EncoderService:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
