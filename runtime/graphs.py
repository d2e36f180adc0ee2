"""CUDA-graph capture of one bucket's forward over static buffer views.

A bucket's graph reads its inputs and plan from views (the first rows) of buffers allocated once at
the largest bucket and shared by every graph; buckets are captured largest first into one memory
pool, so the pool holds roughly the largest bucket's activations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .grid import Bucket


@dataclass
class BucketGraph:
    """One bucket: its captured graph (None when running eagerly) and the views it reads and writes.

    Attributes:
        bucket: the (size, batch) capacity.
        inputs: the encoder input view (``[size, ...]`` rows of the static input buffer).
        plan: the encoder plan whose tensors are views of the static plan buffers.
        num_segments: length of the plan's ``cu_seqlens`` minus one (fixed per bucket).
        outputs: the graph's output tensors (valid after each replay until the next one).
        capture_s: seconds spent capturing.
        eager: an eager bucket (above the grid's ``graphs_up_to``): no graph, no views; its packed
            requests run eagerly, unpadded.
    """

    bucket: Bucket
    inputs: torch.Tensor
    plan: object
    num_segments: int
    graph: torch.cuda.CUDAGraph | None = None
    outputs: tuple[torch.Tensor, ...] = ()
    capture_s: float = 0.0
    stats: dict = field(default_factory=lambda: {"hits": 0, "units": 0, "real_units": 0, "time_ms": 0.0})
    eager: bool = False


def capture(fn: Callable[[], tuple[torch.Tensor, ...]], pool=None, warmup: int = 2):
    """Warms ``fn`` up on a side stream, then captures it.

    Returns:
        (graph, outputs): outputs are the tensors ``fn`` returned during capture; replaying the
        graph rewrites them in place.
    """
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool):
        outputs = fn()
    return graph, outputs
