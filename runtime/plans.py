"""Static plan buffers: a plan's tensors in one byte buffer.

A plan's tensors (int64 taps, float32 weights, int32 ``cu_seqlens``, ...) live in one byte buffer at
aligned offsets, a ``PlanLayout``. The host packs a plan into one (pinned) byte tensor of the same
layout, so staging a plan is one asynchronous copy; the device-side typed views of that layout are
what a bucket's graph reads.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

_ALIGN = 64  # bytes; every field starts at a multiple (any dtype's alignment, a cache line)


@dataclass(frozen=True)
class PlanLayout:
    """Where each tensor of a plan lives in one byte buffer.

    Attributes:
        fields: ``(name, offset, dtype, shape)`` per tensor of the plan's ``TENSORS``.
        nbytes: bytes the layout spans.
    """

    fields: tuple[tuple[str, int, torch.dtype, tuple[int, ...]], ...]
    nbytes: int

    @classmethod
    def of(cls, plan) -> PlanLayout:
        fields, offset = [], 0
        for name in plan.TENSORS:
            t = getattr(plan, name)
            fields.append((name, offset, t.dtype, tuple(t.shape)))
            offset += -(-t.numel() * t.element_size() // _ALIGN) * _ALIGN
        return cls(tuple(fields), offset)

    def views(self, buffer: torch.Tensor) -> dict[str, torch.Tensor]:
        """Typed views of the fields in a uint8 ``buffer`` of at least ``nbytes``."""
        out = {}
        for name, offset, dtype, shape in self.fields:
            n = dtype.itemsize * (torch.Size(shape).numel())
            out[name] = buffer[offset : offset + n].view(dtype).view(shape)
        return out

    def pack(self, plan, pin: bool) -> torch.Tensor:
        """The plan's tensors in one uint8 host tensor of this layout (pinned if ``pin``)."""
        host = torch.empty(self.nbytes, dtype=torch.uint8, pin_memory=pin)
        for name, view in self.views(host).items():
            view.copy_(getattr(plan, name))
        return host


def with_tensors(plan, tensors: dict[str, torch.Tensor]):
    """``plan`` with its tensors replaced (host metadata such as ``seqlens`` kept)."""
    return dataclasses.replace(plan, **tensors)


def upload(plan, device: torch.device):
    """A plan moved to ``device`` with one copy: packed into a pinned buffer on CUDA (asynchronous)."""
    if device.type != "cuda":
        return plan.to(device)
    layout = PlanLayout.of(plan)
    dev = torch.empty(layout.nbytes, dtype=torch.uint8, device=device)
    dev.copy_(layout.pack(plan, pin=True), non_blocking=True)
    return with_tensors(plan, layout.views(dev))


__all__ = ["PlanLayout", "upload", "with_tensors"]
