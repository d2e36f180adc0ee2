"""EncoderService: a thread-safe, bounded front door with futures over one or several runtimes.

Callers on any thread ``submit`` a request and get a ``concurrent.futures.Future`` (or ``await
encode_async``). Requests are validated once, at ``submit``; at most ``max_pending`` are outstanding
(queued or running): past that, ``submit`` waits up to its timeout and raises ``ServiceBusy``.

Threads:
    batcher      when a device has room (fewer than two jobs), closes a batch by
                 ``batching.BatchPolicy`` (``max_wait_ms``
                 after the oldest pending request's arrival, ``quiet_ms`` after the newest with none
                 since, or at ``max_batch``: the rule the simulator applies to traces; and,
                 with ``close_on_return``, at once when a device is idle and as many requests are
                 pending as results were delivered since the last batch: a rule of completions, which
                 the simulator cannot reproduce), packs it with the runtime's own packing, and
                 sends each pack to the device predicted to finish it first: the predicted time still
                 queued on each device plus the pack's own (``cost``).
    launcher     one per device: ``runtime.launch`` (host work, enqueue; no waiting for the GPU), so it
                 prepares batch n+1 while the GPU runs batch n.
    completer    one per device: waits for each launched batch and resolves its futures.
Whatever escapes a thread fails every outstanding future with ``ServiceClosed`` (the cause chained)
and closes the service. A device whose launch or wait fails (not a request's own error) is marked
unhealthy; its work goes once to the others, later work avoids it.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future

import torch

from .batching import BatchPolicy
from .costs import default_cost
from .runtime import EncoderRuntime


class ServiceClosed(RuntimeError):
    """The service was closed (or its worker died); it takes no more requests."""


class ServiceBusy(RuntimeError):
    """``max_pending`` requests are outstanding and none finished within ``submit``'s timeout."""


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"EncoderService: {name}={value!r} must be an integer >= 1")
    return value


class _Job:
    """Requests sent to one device together."""

    __slots__ = ("requests", "shapes", "futures", "predicted_ms", "tries")

    def __init__(self, requests, shapes, futures, predicted_ms: float, tries: int = 0):
        self.requests, self.shapes, self.futures = requests, shapes, futures
        self.predicted_ms, self.tries = predicted_ms, tries


class _Device:
    """One runtime, its threads' queues and its figures."""

    def __init__(self, index: int, runtime: EncoderRuntime):
        self.index, self.runtime = index, runtime
        self.launch_q: queue.SimpleQueue = queue.SimpleQueue()
        self.done_q: queue.SimpleQueue = queue.SimpleQueue()
        self.queued_ms = 0.0  # predicted time of work sent and not finished
        self.jobs = 0  # jobs sent and not finished
        self.healthy = True
        self.error: str | None = None
        self.batches = self.requests = 0
        self.busy_s = self.last_done = 0.0
        self.threads: list[threading.Thread] = []

    def stats(self) -> dict:
        return {"device": str(self.runtime.device), "healthy": self.healthy, "error": self.error,
                "batches": self.batches, "requests": self.requests, "queued_ms": self.queued_ms,
                "busy_s": self.busy_s}


def _packaged_cost(device: torch.device) -> Callable:
    """The packaged measured cost model of the device's card (``costs.packaged``; else
    ``configs/costs_h200.yaml``) as ``run_ms``; the stand-in ``default_cost`` if it cannot be loaded."""
    try:
        from .costs import CostModel

        return CostModel.load(card=torch.cuda.get_device_name(device) if device.type == "cuda" else None).run_ms
    except Exception:  # noqa: BLE001 - dispatch still works, by work instead of measured time
        return default_cost


class EncoderService:
    """Batches concurrent requests into runtime launches on one or several devices.

    Args:
        runtimes: one ``EncoderRuntime`` or a list (one per device, each captured on its own device;
            same grid and encoders).
        max_wait_ms: how long a batch waits for more requests after its first one (finite, >= 0).
        quiet_ms: a batch closes earlier once no request arrived for this long after its last one
            (finite, >= 0; None, the default: off). A burst (clients answered together submitting
            again) then goes whole without waiting out ``max_wait_ms``; but traffic whose batches
            cost mostly a fixed time per run can lose throughput to smaller batches: measure first.
        close_on_return: a batch also closes at once when a device is idle (no job in flight) and at
            least as many requests are pending as the service delivered results since it last took a
            batch (``BatchPolicy.returned``): closed-loop clients that are all back do not wait out
            ``max_wait_ms`` (it raised closed-loop throughput and left an overloaded service, where no
            device is idle, as it was: docs/BENCHMARKS.md). Off: exactly the simulator's rule.
        max_batch: at most this many requests per batch (an integer >= 1).
        max_pending: at most this many requests outstanding, queued or running (an integer >= 1).
        output_device: where results are delivered (default: the device that encoded them); the copy
            is enqueued on the producing device's stream, without waiting.
        cost: ``cost(modality, pack, graph) -> ms``, the predicted GPU time of a pack (default: the
            packaged measured model of the card's ``CostModel.run_ms``; pass the deployment's own calibration).
    """

    def __init__(self, runtimes: EncoderRuntime | Sequence[EncoderRuntime], max_wait_ms: float = 2.0,
                 max_batch: int = 64, max_pending: int = 1024, output_device=None,
                 cost: Callable | None = None, quiet_ms: float | None = None, close_on_return: bool = True):
        rts = [runtimes] if isinstance(runtimes, EncoderRuntime) or not isinstance(runtimes, Sequence) else list(runtimes)
        if not rts:
            raise ValueError("EncoderService: needs at least one runtime")
        if len({id(rt) for rt in rts}) != len(rts) or len({str(rt.device) for rt in rts}) != len(rts):
            raise ValueError("EncoderService: give each runtime once, each on its own device")
        for rt in rts[1:]:
            if rt.grid != rts[0].grid or [lane.modality for lane in rt.lanes()] != [lane.modality for lane in rts[0].lanes()]:
                raise ValueError("EncoderService: every runtime needs the same grid and the same encoders")
        self.policy = BatchPolicy(max_wait_ms, max_batch, quiet_ms, close_on_return)  # the simulator's rule too
        self.max_batch = self.policy.max_batch
        self.max_pending = _positive_int("max_pending", max_pending)
        self.output_device = torch.device(output_device) if output_device is not None else None
        self.cost = cost or _packaged_cost(rts[0].device)
        self.runtime = rts[0]  # validates requests; one grid for all
        self._devices = [_Device(i, rt) for i, rt in enumerate(rts)]
        self._pending: list[tuple[object, list, Future, float]] = []  # request, shape, future, arrival
        self._lock = threading.RLock()
        self._cv = threading.Condition(self._lock)  # pending requests and device room changed
        self._room = threading.Condition(self._lock)  # an outstanding request finished
        self._outstanding = 0
        self._delivered = 0  # results delivered since the batcher last took a batch
        self._closed = False
        self._death: BaseException | None = None
        self._inflight: set[Future] = set()
        self.batches = 0
        self.busy_rejections = 0
        self._threads = [threading.Thread(target=self._guard, args=(self._batch_loop,), name="omnienc-batcher",
                                          daemon=True)]
        for dev in self._devices:
            dev.threads = [
                threading.Thread(target=self._guard, args=(self._launch_loop, dev), name=f"omnienc-launch-{dev.index}",
                                 daemon=True),
                threading.Thread(target=self._guard, args=(self._complete_loop, dev),
                                 name=f"omnienc-complete-{dev.index}", daemon=True),
            ]
            self._threads += dev.threads
        for t in self._threads:
            t.start()

    # -- front door -----------------------------------------------------------------------------
    def submit(self, request, timeout: float | None = None) -> Future:
        """Queues one request.

        Raises ``ValueError`` if it is malformed (before queuing), ``ServiceBusy`` if ``max_pending``
        requests stay outstanding for ``timeout`` seconds (None: wait for room; 0: do not wait),
        ``ServiceClosed`` after ``close`` or a worker's death.
        """
        shape = self.runtime.validate([request])[0]
        future: Future = Future()
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        with self._cv:
            while True:
                self._raise_if_closed()
                if self._outstanding < self.max_pending:
                    break
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    self.busy_rejections += 1
                    raise ServiceBusy(f"EncoderService: {self._outstanding} requests outstanding "
                                      f"(max_pending={self.max_pending}); retry later or shed load")
                self._room.wait(left)
            self._outstanding += 1
            self._inflight.add(future)
            self._pending.append((request, shape, future, time.monotonic()))
            n = len(self._pending)
            if n == 1 or self.policy.full(n) or n == self._delivered:
                # The batcher waits for the first request, then times its close itself (the quiet
                # window moves with each arrival: it looks again when it runs out); only a full
                # batch, or the last answered clients being back, cuts its wait short.
                self._cv.notify_all()
        future.add_done_callback(self._finished)
        return future

    async def encode_async(self, request, timeout: float | None = None):
        """Awaits one request's result without blocking the event loop. Cancelling the awaiting task
        cancels the request if it has not started. ``timeout`` bounds only the wait for room."""
        try:
            future = self.submit(request, timeout=0)
        except ServiceBusy:
            if timeout == 0:
                raise
            loop = asyncio.get_running_loop()
            future = await loop.run_in_executor(None, lambda: self.submit(request, timeout=timeout))
        return await asyncio.wrap_future(future)

    def _raise_if_closed(self) -> None:
        if self._death is not None:
            raise ServiceClosed("EncoderService stopped: a worker thread died") from self._death
        if self._closed:
            raise ServiceClosed("EncoderService is closed; create a new one to submit requests")

    def _finished(self, future: Future) -> None:
        with self._cv:
            self._inflight.discard(future)
            self._outstanding -= 1
            self._room.notify()

    # -- batcher --------------------------------------------------------------------------------
    # One job running on the GPU, one prepared behind it; the rest waits to batch up (a rule timed by
    # predicted job ends measured lower: docs/BENCHMARKS.md).
    JOBS_PER_DEVICE = 2

    def _take(self) -> list | None:
        """The next batch: when a device has room, up to ``max_batch`` pending requests, when the
        policy closes them (``max_wait_ms`` after the oldest, ``quiet_ms`` after the newest with none
        since, at once when full, or at once when a device is idle and the clients last answered
        are back)."""
        with self._cv:
            while not self._closed and (not self._pending or not self._room_on_a_device()):
                self._cv.wait()
            if not self._pending:
                return None  # closed and drained
            while not self.policy.full(len(self._pending)) and not self._closed:
                if self.policy.returned(len(self._pending), self._delivered, self._idle_device()):
                    break
                left = self.policy.close_at(self._pending[0][3], self._pending[-1][3]) - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(left)
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
            self._delivered = 0
            return batch

    def _idle_device(self) -> bool:
        """Whether a healthy device has no job in flight."""
        return any(d.jobs == 0 for d in self._devices if d.healthy)

    def _room_on_a_device(self) -> bool:
        return any(d.jobs < self.JOBS_PER_DEVICE for d in self._devices if d.healthy) or \
            not any(d.healthy for d in self._devices)

    def _batch_loop(self) -> None:
        while (batch := self._take()) is not None:
            live = [(r, s, f) for r, s, f, _ in batch if not f.cancelled()]
            if live:
                self.batches += 1
                self._dispatch(live)
        for dev in self._devices:
            dev.launch_q.put(None)

    def _dispatch(self, live: list, exclude: _Device | None = None, tries: int = 0) -> None:
        """Packs ``live`` per modality and sends each pack to the healthy device predicted to finish
        it first; requests of the packs a device gets go to it as one job."""
        healthy = [d for d in self._devices if d.healthy and d is not exclude]
        devices = [d for d in healthy if d.jobs < self.JOBS_PER_DEVICE] or healthy or \
            [d for d in self._devices if d is not exclude] or self._devices
        jobs: dict[int, list] = {}
        with self._lock:
            for lane, idx in self.runtime.route([r for r, _, _ in live]):
                for p, graph in lane.pack([live[i][1] for i in idx]):
                    ms = self.cost(lane.modality, p, graph)
                    dev = min(devices, key=lambda d: d.queued_ms + ms)
                    dev.queued_ms += ms
                    jobs.setdefault(dev.index, [[], 0.0])
                    jobs[dev.index][0] += [live[idx[m]] for m in p.members]
                    jobs[dev.index][1] += ms
            for index in jobs:
                self._devices[index].jobs += 1
        for index, (items, ms) in jobs.items():
            self._devices[index].launch_q.put(
                _Job([r for r, _, _ in items], [s for _, s, _ in items], [f for _, _, f in items], ms, tries))

    # -- per device -----------------------------------------------------------------------------
    def _launch_loop(self, dev: _Device) -> None:
        rt = dev.runtime
        cuda = rt.device.type == "cuda"
        while (job := dev.launch_q.get()) is not None:
            if job.tries == 0:  # a request cancelled before its launch never runs
                keep = [k for k, f in enumerate(job.futures) if f.set_running_or_notify_cancel()]
                if len(keep) < len(job.futures):
                    job.requests, job.shapes, job.futures = ([x[k] for k in keep] for x in
                                                             (job.requests, job.shapes, job.futures))
                if not keep:
                    self._job_done(dev, job)
                    continue
            try:
                with torch.cuda.device(rt.device) if cuda else _nothing():
                    t0 = time.perf_counter()
                    batch = rt.launch(job.requests, job.shapes)
                    moved, event = self._to_output_device(batch, dev)
            except Exception as e:  # noqa: BLE001 - not a request's own error: the device failed
                self._device_failed(dev, job, e)
                continue
            dev.done_q.put((job, batch, moved, event, t0))
        dev.done_q.put(None)

    def _to_output_device(self, batch, dev: _Device) -> tuple[list | None, torch.cuda.Event | None]:
        """Copies of the outputs on ``output_device``, if one is set, and an event after them.

        On CUDA the copies run on a side stream of the producing device that waits for the batch, so a
        copy to another GPU does not make the two devices' own streams wait for each other; the
        completer waits for the event before handing the copies out."""
        target = self.output_device
        if target is None:
            return None, None
        src = dev.runtime.device
        if src.type != "cuda":
            return [None if o is None else _moved(o, target, None) for o in batch.outputs], None
        side = dev.copy_stream = getattr(dev, "copy_stream", None) or torch.cuda.Stream(src)
        side.wait_stream(torch.cuda.current_stream(src))
        with torch.cuda.stream(side):
            out = [None if o is None else _moved(o, target, side) for o in batch.outputs]
            event = torch.cuda.Event()
            event.record(side)
        return out, event

    def _complete_loop(self, dev: _Device) -> None:
        while (item := dev.done_q.get()) is not None:
            job, batch, moved, event, t0 = item
            try:
                results = batch.results()
                if event is not None:
                    event.synchronize()
            except Exception as e:  # noqa: BLE001 - waiting failed: the device, not a request
                self._device_failed(dev, job, e)
                continue
            now = time.perf_counter()
            span = now - max(t0, dev.last_done)
            dev.busy_s += span  # the union of the jobs' spans
            dev.last_done = now
            dev.batches += 1
            dev.requests += len(job.requests)
            self._job_done(dev, job, delivered=len(job.futures))
            for k, (f, res) in enumerate(zip(job.futures, results)):
                if isinstance(res, BaseException):
                    _resolve(f, error=res)
                else:
                    _resolve(f, moved[k] if moved is not None else res)

    def _job_done(self, dev: _Device, job: _Job, delivered: int = 0) -> None:
        """``job`` left ``dev``; ``delivered``: its results about to be handed out (their clients
        may come back: ``BatchPolicy.returned``)."""
        with self._cv:
            self._delivered += delivered
            dev.jobs -= 1
            dev.queued_ms = max(dev.queued_ms - job.predicted_ms, 0.0) if dev.jobs else 0.0
            if self._pending:  # else the batcher waits for a submit, and the first one wakes it
                self._cv.notify_all()

    def _device_failed(self, dev: _Device, job: _Job, error: Exception) -> None:
        """Marks ``dev`` unhealthy and sends its job once to the other devices (or fails it)."""
        self._job_done(dev, job)
        with self._cv:
            others = [d for d in self._devices if d is not dev and d.healthy]
            if others:
                dev.healthy = False
                dev.error = f"{type(error).__name__}: {error}"
        if others and job.tries == 0:
            self._dispatch(list(zip(job.requests, job.shapes, job.futures)), exclude=dev, tries=1)
            return
        for f in job.futures:
            _resolve(f, error=error)

    # -- lifecycle ------------------------------------------------------------------------------
    def _guard(self, loop, *args) -> None:
        """Runs a thread's loop; whatever escapes it fails every outstanding future and closes."""
        try:
            loop(*args)
        except BaseException as e:  # noqa: BLE001 - the service must not die silently
            self._die(e)

    def _die(self, error: BaseException) -> None:
        with self._cv:
            if self._death is None:
                self._death = error
            self._closed = True
            futures = list(self._inflight)
            self._pending.clear()
            self._cv.notify_all()
        for f in futures:
            closed = ServiceClosed(f"EncoderService stopped: a worker thread died ({type(error).__name__}: {error})")
            closed.__cause__ = error
            _resolve(f, error=closed)
        for dev in self._devices:
            dev.launch_q.put(None)
            dev.done_q.put(None)

    def close(self, cancel_pending: bool = False, timeout: float | None = None) -> bool:
        """Stops taking requests. Queued ones finish (or, with ``cancel_pending``, are cancelled).
        Returns True once every thread has finished, False if ``timeout`` seconds passed first
        (e.g. an encode is stuck; its futures stay pending until it returns)."""
        with self._cv:
            self._closed = True
            if cancel_pending:
                for _, _, f, _ in self._pending:
                    f.cancel()
                self._pending.clear()
            self._cv.notify_all()
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if deadline is None else max(deadline - time.monotonic(), 0.0))
        return not any(t.is_alive() for t in self._threads)

    def stats(self) -> dict:
        """Service figures (per device: health, batches, requests, busy time); no GPU waits."""
        with self._cv:
            return {"batches": self.batches, "outstanding": self._outstanding, "queued": len(self._pending),
                    "busy_rejections": self.busy_rejections, "closed": self._closed,
                    "devices": [d.stats() for d in self._devices]}

    def __enter__(self) -> EncoderService:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _moved(output, target: torch.device, stream):
    """``output`` (a ``VisionOutput``/``AudioOutput``) with its tensors copied to ``target``; the
    sources are marked used by ``stream`` so their memory is not reused before the copies ran."""
    def move(t: torch.Tensor) -> torch.Tensor:
        if stream is not None:
            t.record_stream(stream)
        return t.to(target, non_blocking=True)

    return type(output)(**{k: (move(v) if isinstance(v, torch.Tensor) else [move(t) for t in v])
                           for k, v in vars(output).items()})


def _resolve(future: Future, value=None, error: BaseException | None = None) -> None:
    """Sets a future's result or exception unless it is already resolved (cancelled, or failed by a
    closing service meanwhile)."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)
    except Exception:  # noqa: BLE001 - InvalidStateError: resolved elsewhere first
        pass


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


__all__ = ["EncoderService", "ServiceBusy", "ServiceClosed", "default_cost"]
