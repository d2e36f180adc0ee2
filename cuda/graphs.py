"""CUDA graph capture: once at start-up (``capture``) and while serving (``capture_live``)."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterator

import torch

_capture_streams: dict[int, torch.cuda.Stream] = {}


def capture_stream(device: int) -> torch.cuda.Stream:
    """The capture stream of a device: one per device, since ``torch.cuda.graph``'s own default is
    created once, on whichever device was current first, and capturing another device's work on
    it fails."""
    if device not in _capture_streams:
        _capture_streams[device] = torch.cuda.Stream(device)
    return _capture_streams[device]


@contextlib.contextmanager
def no_collection() -> Iterator[None]:
    """Python's cyclic garbage collector held off (as it was before, after): a collection during a
    capture may destroy an unreachable object's CUDA graph (a runtime dropped earlier whose lanes
    hold cycles), and destroying a graph is not permitted while a stream captures: the capture is
    invalidated (a process that builds and drops runtimes in turns, as measuring tools do)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def capture(fn: Callable[[], tuple[torch.Tensor, ...]], pool=None, warmup: int = 2):
    """Warms ``fn`` up on a side stream, then captures it, on the current device.

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
    with no_collection(), torch.cuda.graph(graph, pool=pool, stream=capture_stream(device)):
        outputs = fn()
    return graph, outputs


def capture_live(fn: Callable[[], tuple[torch.Tensor, ...]], pool=None, stream: torch.cuda.Stream | None = None,
                 warmup: int = 0):
    """Captures ``fn`` on the current device while other work may be running: no device
    synchronize and no emptying of the allocator's cache (what ``torch.cuda.graph`` does on entry),
    and capture errors are this thread's only, so other threads' GPU work neither breaks the
    capture nor fails because of it. A failing capture raises; its stream is left as it was.

    Args:
        fn: the work to capture. Its kernel plans and workspaces must exist already: the caller
            has just run it eagerly, or asks for ``warmup`` runs first.
        pool: the graph memory pool to capture into (None: a new one).
        stream: where to capture (None: the device's capture stream); a caller that captures from
            another thread than the runtime's passes its own.
        warmup: eager runs of ``fn`` on ``stream`` before the capture (the current stream then
            waits for them).

    Returns:
        (graph, outputs) as ``capture``.
    """
    stream = stream or capture_stream(torch.cuda.current_device())
    stream.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            fn()
        with no_collection():
            graph.capture_begin(pool=pool, capture_error_mode="thread_local")
            try:
                outputs = fn()
            finally:
                graph.capture_end()
    if warmup:
        torch.cuda.current_stream().wait_stream(stream)
    return graph, outputs


__all__ = ["capture", "capture_live", "capture_stream", "no_collection"]
