"""Uncaptured runs and their out-of-memory ladder.

An eager run is one call of the encoder on exactly its requests, unpadded, on an exact plan, with
the attention backend the lane's policy picks for it. Out of device memory, a pack retries request
by request, and a request of several items item by item; a single item that still does not fit
fails with an error naming its request.
"""

from __future__ import annotations

import torch

from ..encoders.attention import cudnn_plan
from ..encoders.ops.finite import row_flags
from .attention_policy import AttentionPolicy
from .modality import Modality
from .plans import upload


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
        """A request that fits no bucket. On out-of-memory, a request of several items runs item by
        item; a single item that still does not fit fails with an error naming the request."""
        try:
            return self.run([request], [shape])
        except torch.OutOfMemoryError:
            pass
        self.release()
        if len(shape) > 1:
            try:
                parts = [self.run([r], [s]) for r, s in self.modality.items(request, shape)]
                return tuple(torch.cat(ts) for ts in zip(*parts))
            except torch.OutOfMemoryError:
                pass
        raise RuntimeError(
            f"request {index} ({type(request).__name__}): out of device memory in the eager fallback "
            f"(shape {shape}); it fits no bucket and is too large to run alone -- split it or add a larger bucket"
        )

    def pack(self, requests: list, shapes: list, ids: list[int]) -> tuple[torch.Tensor, ...]:
        """An eager bucket's pack as one call. On out-of-memory, request by request (each through the
        fallback's own splitting)."""
        if len(requests) > 1:
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
