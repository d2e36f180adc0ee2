"""When requests are batched together: the service's rule, one implementation (pure, no torch).

The rule (``BatchPolicy``): a batch opens at the first pending arrival and closes at
``deadline(first) = first + max_wait_ms``, or as soon as ``max_batch`` requests are pending
(``full``), whichever comes first. One worker runs the batches one after another: what arrives while
it is busy waits; when it frees, a batch whose deadline has already passed (or that is already full)
goes at once, else it waits for its deadline or to fill up.

``EncoderService`` applies the rule in real time; ``group_arrivals`` applies it to a trace, so the
``replay`` simulator and the tuner batch exactly as the service does. ``group_windows`` keeps the
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
    """

    max_wait_ms: float = 2.0
    max_batch: int = 64

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
        object.__setattr__(self, "max_wait_ms", float(w))
        object.__setattr__(self, "max_batch", b)

    def deadline(self, first_arrival_s: float) -> float:
        """When a batch whose first pending request arrived at ``first_arrival_s`` closes, in seconds
        on the same clock (if it does not fill up before)."""
        return first_arrival_s + self.max_wait_ms / 1e3

    def full(self, n: int) -> bool:
        """Whether ``n`` pending requests make a full batch (it goes at once)."""
        return n >= self.max_batch

    def describe(self) -> str:
        return f"service rule: wait up to {self.max_wait_ms:g} ms after the first request, at most {self.max_batch} per batch"


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
    ``max(free, min(policy.deadline(t0), arrival of the max_batch-th pending request))``, where
    ``free`` is when the worker finished the previous batch; it takes the pending requests that
    arrived by then, at most ``max_batch`` (arrival order, ties by index).

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
        close = max(free, min(policy.deadline(first), fills))
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
