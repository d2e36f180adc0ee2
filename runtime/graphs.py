"""Static plan buffers and CUDA-graph capture.

A plan's tensors (int64 taps, float32 weights, int32 ``cu_seqlens``, ...) live in one byte buffer at
aligned offsets, a ``PlanLayout``. The host packs a plan into one (pinned) byte tensor of the same
layout, so staging a plan is one asynchronous copy; the device-side typed views of that layout are
what a bucket's graph reads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
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


_capture_streams: dict[int, torch.cuda.Stream] = {}


def _capture_stream(device: int) -> torch.cuda.Stream:
    if device not in _capture_streams:
        _capture_streams[device] = torch.cuda.Stream(device)
    return _capture_streams[device]


def capture(fn: Callable[[], tuple[torch.Tensor, ...]], pool=None, warmup: int = 2):
    """Warms ``fn`` up on a side stream, then captures it, on the current device.

    The capture stream is one per device: ``torch.cuda.graph``'s own default is created once, on
    whichever device was current first, and capturing another device's work on it fails.

    Returns:
        (graph, outputs): outputs are the tensors ``fn`` returned during capture; replaying the
        graph rewrites them in place.
    """
    device = torch.cuda.current_device()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool, stream=_capture_stream(device)):
        outputs = fn()
    return graph, outputs


def capture_live(fn: Callable[[], tuple[torch.Tensor, ...]], pool=None):
    """Captures ``fn`` on the current device while other work may be running: no warm-up (the
    caller has just run ``fn``'s work eagerly, which built every lazily made kernel plan and
    workspace), no device synchronize and no emptying of the allocator's cache (what
    ``torch.cuda.graph`` does on entry), and capture errors are this thread's only, so other
    threads' GPU work neither breaks the capture nor fails because of it. A failing capture
    raises; its stream is left as it was.

    Returns:
        (graph, outputs) as ``capture``.
    """
    stream = _capture_stream(torch.cuda.current_device())
    stream.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(stream):
        graph.capture_begin(pool=pool, capture_error_mode="thread_local")
        try:
            outputs = fn()
        finally:
            graph.capture_end()
    return graph, outputs


__all__ = ["PlanLayout", "capture", "capture_live", "upload", "with_tensors"]
