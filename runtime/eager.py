"""Uncaptured runs and their out-of-memory ladder.

An eager run is one call of the encoder on exactly its requests, unpadded, on an exact plan, with
the attention backend the lane's policy picks for it. Each call stays within the lane's bound on
transient memory (``limit``, from ``RuntimeConfig.max_transient_bytes``), by its estimate
(``Modality.eager_bytes``): a pack over it runs request by request, a request item by item, and an
item over it fails alone, naming its request, its size and the bound, before any work. Out of device
memory all the same, the same ladder: request by request, then item by item, then the error.
"""

from __future__ import annotations

import torch

from ..encoders.attention import cudnn_plan
from ..encoders.ops.finite import row_flags
from .attention_policy import AttentionPolicy
from .modality import Modality
from .plans import upload
from .stats import UNITS, byte_size


def release_cached_memory(device: torch.device) -> None:
    """Hands the allocator's cached blocks back after an out-of-memory error, so the next try can
    have them. Never raises: a clean-up must not replace the error being handled (on a device whose
    context has already failed, ``empty_cache`` itself throws)."""
    if device.type != "cuda":
        return
    try:
        torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - the run's own error is the one to deliver
        pass


class EagerRunner:
    """Runs a lane's uncaptured work (see the module docstring).

    Args:
        modality: the lane's modality.
        device: the runtime's device.
        attention: the lane's attention policy (``uncaptured`` picks each call's backend).
    """

    def __init__(self, modality: Modality, device: torch.device, attention: AttentionPolicy):
        self.modality, self.device, self.attention = modality, device, attention
        self.limit: int | None = None  # bytes one call may take (None: unbounded)

    def fits(self, shapes: list) -> bool:
        """Whether one eager call over requests of ``shapes`` stays within ``limit``."""
        if self.limit is None:
            return True
        m = self.modality
        return m.eager_bytes(sum(m.demand(s).size for s in shapes)) <= self.limit

    def run(self, requests: list, shapes: list) -> tuple[torch.Tensor, ...]:
        """One eager call on exactly these requests (no padding); outputs and their row flags."""
        m = self.modality
        inputs = m.input_buffer(sum(m.rows(s) for s in shapes), self.device, zero=False)
        m.fill(requests, shapes, inputs)
        host_plan = m.plan(shapes)
        backend = self.attention.uncaptured(host_plan.seqlens)
        if backend == "cudnn":
            host_plan = cudnn_plan(host_plan)  # a segment count and bound whose cuDNN graph recurs
        plan = upload(host_plan, self.device)
        self.attention.count(backend)
        outputs = m.run(inputs, plan, backend)
        return (*outputs, row_flags(outputs))

    def fallback(self, request, shape, index: int) -> tuple[torch.Tensor, ...]:
        """A request run alone: in one call if it fits the bound, else item by item; an item over
        the bound fails the request with an error naming it, its size and the bound, before any
        work. On out-of-memory, item by item too; a single item that still does not fit fails with
        an error naming the request."""
        if self.fits([shape]):
            try:
                return self.run([request], [shape])
            except torch.OutOfMemoryError:
                self.release()
        items = self.modality.items(request, shape) if len(shape) > 1 else [(request, shape)]
        for _, s in items:
            if not self.fits([s]):
                raise self._too_large(index, request, s)
        if len(items) > 1:  # one item that fits the bound was run whole above
            try:
                parts = [self.run([r], [s]) for r, s in items]
                return tuple(torch.cat(ts) for ts in zip(*parts))
            except torch.OutOfMemoryError:
                self.release()
        raise RuntimeError(
            f"request {index} ({type(request).__name__}): {shape}: out of device memory in its eager run, whole "
            "and item by item: send it smaller, add a graph bucket that holds it, or free device memory"
        )

    def _too_large(self, index: int, request, shape) -> ValueError:
        m = self.modality
        units = m.demand(shape).size
        word = UNITS.get(m.name, "units")
        return ValueError(
            f"request {index} ({type(request).__name__}): {shape} ({units} {word}) needs about "
            f"{byte_size(m.eager_bytes(units))} for its eager run, above the runtime's bound on transient memory "
            f"of {byte_size(self.limit)} (RuntimeConfig.max_transient_bytes), and cannot be cut into smaller "
            "pieces: send it smaller, add a graph bucket that holds it, or raise the bound")

    def pack(self, requests: list, shapes: list, ids: list[int]) -> tuple[torch.Tensor, ...]:
        """An eager bucket's pack as one call if it fits the bound. Over it, or on out-of-memory,
        request by request (each through the fallback's own ladder)."""
        if len(requests) > 1 and self.fits(shapes):
            try:
                return self.run(requests, shapes)
            except torch.OutOfMemoryError:
                self.release()
        parts = [self.fallback(r, s, i) for r, s, i in zip(requests, shapes, ids)]
        return tuple(torch.cat(ts) for ts in zip(*parts))

    def release(self) -> None:
        """After an out-of-memory: the allocator's cached blocks back to the device."""
        release_cached_memory(self.device)


__all__ = ["EagerRunner", "release_cached_memory"]
