"""EncoderService: a thread-safe front door with futures over one EncoderRuntime.

Callers on any thread ``submit`` a request and get a ``concurrent.futures.Future``. One worker thread
waits up to ``max_wait_ms`` after the first pending request to let others arrive, then encodes what
is pending in one ``runtime.encode`` call (so requests of many users share replays) and resolves the
futures. Requests are validated at ``submit``: a bad one raises there and never reaches a batch. If
a batch still fails, each of its requests is retried alone, so only the culprits' futures fail.
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
        self._pending: list[tuple[object, Future]] = []
        self._cv = threading.Condition()
        self._closed = False
        self.batches = 0
        self._worker = threading.Thread(target=self._loop, name="omnienc-service", daemon=True)
        self._worker.start()

    def submit(self, request) -> Future:
        """Queues one request; raises ``ValueError`` if it is malformed, ``ServiceClosed`` after close."""
        self.runtime.validate([request])
        future: Future = Future()
        with self._cv:
            if self._closed:
                raise ServiceClosed("EncoderService is closed; create a new one to submit requests")
            self._pending.append((request, future))
            self._cv.notify()
        return future

    def _take(self) -> list[tuple[object, Future]] | None:
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
            live = [(r, f) for r, f in batch if f.set_running_or_notify_cancel()]
            if not live:
                continue
            self.batches += 1
            try:
                outs = self.runtime.encode([r for r, _ in live])
            except Exception:
                # Find the culprits: run each request alone; only those that fail again fail.
                for r, f in live:
                    try:
                        f.set_result(self.runtime.encode([r])[0])
                    except Exception as e:  # noqa: BLE001 - delivered to the caller's future
                        f.set_exception(e)
                continue
            for (_, f), o in zip(live, outs):
                f.set_result(o)

    def close(self, cancel_pending: bool = False) -> None:
        """Stops taking requests. Pending ones finish (or, with ``cancel_pending``, are cancelled)."""
        with self._cv:
            self._closed = True
            if cancel_pending:
                for _, f in self._pending:
                    f.cancel()
                self._pending.clear()
            self._cv.notify_all()
        self._worker.join()

    def __enter__(self) -> EncoderService:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
