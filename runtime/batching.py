"""When requests are batched together: the service's rule, one implementation (pure, no torch).

The rule (``BatchPolicy``): a batch opens at the first pending arrival and closes at
``deadline(first) = first + max_wait_ms``, as soon as ``max_batch`` requests are pending (``full``),
or once no request arrived for ``quiet_ms`` after the last one (``quiet``: a burst, e.g. closed-loop
clients answered together coming back, is over), whichever comes first. One worker runs the batches
one after another: what arrives while it is busy waits; when it frees, a batch that has already
closed goes at once, else it waits for its close.

The service adds one close that depends on its completions (``close_on_return``, ``returned``): a
batch also closes at once when a device is idle and at least as many requests are pending as the
service delivered results since it last took a batch (the clients it answered are back).
``group_arrivals`` cannot apply it: a trace's arrival times do not depend on when results were
delivered, so the simulator batches by the other closes only (as if ``close_on_return`` were off).

``EncoderService`` applies the rule in real time; ``group_arrivals`` applies it to a trace, so the
simulator and the tuner batch exactly as the service does. ``group_windows`` keeps the
older fixed windows (``--step-ms``) for comparison with earlier results.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class BatchPolicy:
    """How long the worker waits to fill a batch, and how large a batch may get.

    Attributes:
        max_wait_ms: Milliseconds the worker waits after the first pending request, finite, >= 0.
        max_batch: Most requests (both modalities together) in one batch, an integer >= 1.
        quiet_ms: Milliseconds without a new arrival after which a batch closes early, finite,
            >= 0; None: never early (only ``max_wait_ms`` or ``max_batch`` close it).
        close_on_return: Close at once when a device is idle and the requests last answered are
            back (see ``returned``); service only: ``group_arrivals`` ignores it.
    """

    max_wait_ms: float = 2.0
    max_batch: int = 64
    quiet_ms: float | None = None
    close_on_return: bool = True

    def __post_init__(self) -> None:
        w = self.max_wait_ms
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise ValueError(f"max_wait_ms={w!r} must be a finite number of milliseconds >= 0")
        b = self.max_batch
        try:
            if isinstance(b, bool):
                raise TypeError
            b = operator.index(b)
        except TypeError:
            raise ValueError(f"max_batch={b!r} must be an integer >= 1 (requests per batch)") from None
        if b < 1:
            raise ValueError(f"max_batch={b} must be >= 1 (requests per batch)")
        q = self.quiet_ms
        if q is not None and (isinstance(q, bool) or not isinstance(q, (int, float)) or not math.isfinite(q) or q < 0):
            raise ValueError(f"quiet_ms={q!r} must be a finite number of milliseconds >= 0, or None (off)")
        object.__setattr__(self, "max_wait_ms", float(w))
        object.__setattr__(self, "max_batch", b)
        object.__setattr__(self, "quiet_ms", None if q is None else float(q))
        if not isinstance(self.close_on_return, bool):
            raise ValueError(f"close_on_return={self.close_on_return!r} must be True or False")

    def deadline(self, first_arrival_s: float) -> float:
        """When a batch whose first pending request arrived at ``first_arrival_s`` closes, in seconds
        on the same clock (if it does not fill up before)."""
        return first_arrival_s + self.max_wait_ms / 1e3

    def full(self, n: int) -> bool:
        """Whether ``n`` pending requests make a full batch (it goes at once)."""
        return n >= self.max_batch

    def close_at(self, first_arrival_s: float, last_arrival_s: float) -> float:
        """When a batch closes if it does not fill up: its deadline, or ``quiet_ms`` after its last
        arrival, whichever is first (seconds on the arrivals' clock)."""
        close = first_arrival_s + self.max_wait_ms / 1e3
        if self.quiet_ms is not None:
            close = min(close, last_arrival_s + self.quiet_ms / 1e3)
        return close

    def returned(self, pending: int, delivered: int, idle: bool) -> bool:
        """Whether a batch closes at once because the clients last answered are back: a device is
        ``idle`` (no job in flight) and at least ``delivered`` requests (>= 1: results delivered since
        the service last took a batch) are ``pending``. Clients cannot be told apart, so this counts:
        a closed loop whose answered clients all submitted again goes without waiting out
        ``max_wait_ms``; if fewer come back, the batch waits for its other closes as before."""
        return self.close_on_return and idle and 0 < delivered <= pending

    def describe(self) -> str:
        quiet = "" if self.quiet_ms is None else f" (or {self.quiet_ms:g} ms after the last while none arrives)"
        return (f"service rule: wait up to {self.max_wait_ms:g} ms after the first request{quiet}, "
                f"at most {self.max_batch} per batch")


def _order(times_s: Sequence[float]) -> list[int]:
    for i, t in enumerate(times_s):
        if not math.isfinite(t):
            raise ValueError(f"arrival {i}: time {t!r} must be a finite number of seconds")
    return sorted(range(len(times_s)), key=lambda i: (times_s[i], i))


def group_arrivals(
    times_s: Sequence[float], policy: BatchPolicy, busy_ms: Callable[[list[int]], float] | None = None
) -> list[list[int]]:
    """Applies ``policy`` to arrival times: which requests the service runs together.

    A batch opens at the first pending arrival ``t0`` and closes at
    ``max(free, min(policy.deadline(t0), arrival of the max_batch-th pending request, quiet))``,
    where ``quiet`` is ``quiet_ms`` after the first pending arrival that the next one does not follow
    within ``quiet_ms`` (arrivals before ``free`` always follow: the worker sees them together), and
    ``free`` is when the worker finished the previous batch; it takes the
    pending requests that arrived by then, at most ``max_batch`` (arrival order, ties by index).

    ``policy.close_on_return`` is not applied: it depends on when results are delivered, which
    arrival times given in advance do not follow (see the module docstring).

    Args:
        times_s: Arrival time of each request in seconds, finite, any order.
        policy: The batching rule.
        busy_ms: If given, ``busy_ms(batch)`` is how long the worker is busy with ``batch`` (e.g. its
            predicted GPU ms); it is called once per batch, in order. None: the worker is never busy.

    Returns:
        Batches in the order they run, each a list of indices into ``times_s`` in arrival order;
        every index appears exactly once.
    """
    order = _order(times_s)
    n, cap = len(order), policy.max_batch
    groups: list[list[int]] = []
    free = -math.inf
    k = 0
    while k < n:
        first = times_s[order[k]]
        fills = times_s[order[k + cap - 1]] if k + cap - 1 < n else math.inf
        close = min(policy.deadline(first), fills)
        if policy.quiet_ms is not None:
            quiet, j = policy.quiet_ms / 1e3, k
            # The window moves with each arrival; arrivals while the worker is still busy all join it.
            while j + 1 < n and j + 1 < k + cap and (times_s[order[j + 1]] <= times_s[order[j]] + quiet
                                                      or times_s[order[j + 1]] <= free):
                j += 1
            close = min(close, times_s[order[j]] + quiet)
        close = max(free, close)
        end = k + 1  # the first pending request always goes
        while end < n and end - k < cap and times_s[order[end]] <= close:
            end += 1
        group = order[k:end]
        groups.append(group)
        free = close + (busy_ms(group) / 1e3 if busy_ms is not None else 0.0)
        k = end
    return groups


def group_windows(times_s: Sequence[float], step_ms: float) -> list[list[int]]:
    """Fixed windows (the older ``--step-ms`` batching): requests with equal
    ``floor(t * 1000 / step_ms)`` form one batch (a 1e-9 tolerance absorbs float error at window
    edges); ``step_ms = 0`` runs each request alone.

    Returns:
        Batches in window order, each a list of indices in (time, index) order.
    """
    if isinstance(step_ms, bool) or not isinstance(step_ms, (int, float)) or not (step_ms >= 0 and math.isfinite(step_ms)):
        raise ValueError(f"step_ms={step_ms!r} must be a finite number >= 0")
    order = _order(times_s)
    if step_ms == 0:
        return [[i] for i in order]
    groups: dict[int, list[int]] = {}
    for i in order:
        groups.setdefault(math.floor(times_s[i] * 1000.0 / step_ms + 1e-9), []).append(i)
    return [groups[k] for k in sorted(groups)]


__all__ = ["BatchPolicy", "group_arrivals", "group_windows"]
