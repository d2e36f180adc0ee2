"""Which attention backend each of a lane's runs takes: captured, uncaptured, exact-layout graphs.

* A captured run (a graph bucket) takes the mode's backend (``auto``: the encoder's own, but cuDNN
  varlen for buckets of at least ``graph_cudnn_tokens`` where the ``cudnn`` extra is installed), or
  with ``fastest`` the faster of the capturable ones, measured per bucket at capture (``candidates``).
* An uncaptured run (an eager bucket, a fallback) under ``eager_attention=auto`` takes cuDNN's
  varlen attention for a call of at least ``eager_cudnn_tokens`` tokens where the ``cudnn`` extra is
  installed (on a plan rounded so its cuDNN graph recurs); else, where ``dense_after`` is set (off
  by default), ``dense`` where the layout suits it and each of its [B, L] shapes has been seen
  ``dense_after`` times and holds a place among the ``dense_shapes`` admitted (cuDNN builds and
  keeps a graph per shape); else the captured backend.
* An exact-layout graph takes ``dense`` where the layout suits it and its shapes fit among the
  ``dense_shapes`` (admitted at once: the capture's eager run builds their plans), else what a
  graph bucket of its tokens would take under ``auto`` (cuDNN varlen from ``graph_cudnn_tokens``),
  else the captured backend.

torch keeps cuDNN's graphs per thread, so the bound holds per launching thread.
"""

from __future__ import annotations

import torch

from ..encoders.attention import (
    available_backends,
    cudnn_layout,
    cudnn_supported,
    dense_layout,
    dense_supported,
    resolve_backend,
    segment_runs,
    varlen_attention,
)
from .config import Attention, RuntimeConfig
from .modality import EncoderFacts


class AttentionPolicy:
    """The attention backends of one lane's runs (see the module docstring).

    Args:
        facts: the encoder's device, dtype, heads and own backend.
        config: the runtime's ``attention``, ``eager_attention``, ``eager_cudnn_tokens``,
            ``graph_cudnn_tokens``, ``dense_after`` and ``dense_shapes``.
        eager_cudnn: whether this modality's big calls (uncaptured, and graph buckets) may take
            cuDNN varlen at all.
    """

    def __init__(self, facts: EncoderFacts, config: RuntimeConfig, eager_cudnn: bool = True):
        self.facts = facts
        self.mode, self.eager_mode = config.attention, config.eager_attention
        self.cudnn_tokens = config.eager_cudnn_tokens if eager_cudnn else 0
        self.graph_cudnn_tokens = config.graph_cudnn_tokens if eager_cudnn else 0
        self.dense_after, self.max_dense = config.dense_after, config.dense_shapes
        self._dense_seen: dict[tuple[int, int], int] = {}  # [B, L] shape -> sightings (<= max_dense keys)
        self.runs: dict[str, int] = {}  # backend -> uncaptured runs on it

    def captured(self) -> str:
        """The backend asked for (the mode's, else the encoder's), resolved for these tensors."""
        f = self.facts
        name = f.attn_backend if self.mode.picks else self.mode.value
        return resolve_backend(name, f.device, f.dtype, f.head_dim)

    def candidates(self, size: int = 0) -> list[str]:
        """Backends a graph bucket of ``size`` tokens chooses from by measurement: every capturable
        one with ``fastest``; under ``auto`` cuDNN varlen alone for a bucket of at least
        ``graph_cudnn_tokens`` where it runs these tensors; else the one asked for."""
        f = self.facts
        if self.mode is Attention.FASTEST:
            return available_backends(f.device, f.dtype, f.head_dim) or [self.captured()]
        return ["cudnn"] if self._graph_cudnn(size) else [self.captured()]

    def _graph_cudnn(self, size: int) -> bool:
        """Whether a graph of ``size`` tokens captures cuDNN varlen under ``auto``."""
        f = self.facts
        return (self.mode is Attention.AUTO and 0 < self.graph_cudnn_tokens <= size
                and cudnn_supported(f.device, f.dtype, f.head_dim))

    def uncaptured(self, seqlens) -> str:
        """The backend of an uncaptured run over segments ``seqlens`` (where ``dense`` may take it,
        this counts a sighting of its shapes)."""
        if self.eager_mode is not Attention.AUTO:
            f = self.facts
            backend = resolve_backend(self.eager_mode.value, f.device, f.dtype, f.head_dim)
        elif self.cudnn_suits(seqlens):
            backend = "cudnn"
        elif self.dense_after and self._dense_suits(seqlens) and self._admit_dense(segment_runs(seqlens)):
            backend = "dense"
        else:
            backend = self.captured()
        return backend

    def count(self, backend: str) -> None:
        """Counts an uncaptured run on ``backend`` (``stats``)."""
        self.runs[backend] = self.runs.get(backend, 0) + 1

    def exact(self, seqlens) -> str:
        """The backend of an exact-layout graph over segments ``seqlens`` (its shapes count against
        ``dense_shapes``)."""
        if self._dense_suits(seqlens) and self._dense_room(segment_runs(seqlens)):
            return "dense"
        return "cudnn" if self._graph_cudnn(sum(seqlens)) else self.captured()

    def cudnn_suits(self, seqlens) -> bool:
        """Whether cuDNN's varlen attention takes an uncaptured call over ``seqlens``: the mode picks,
        the call holds at least ``eager_cudnn_tokens`` tokens, and the ``cudnn`` extra runs these
        tensors."""
        f = self.facts
        return (0 < self.cudnn_tokens <= sum(seqlens) and self.mode.picks
                and cudnn_supported(f.device, f.dtype, f.head_dim))

    def warm_cudnn(self) -> None:
        """Where big uncaptured calls may take ``cudnn``, one small such call now: the frontend's
        start-up (its import, a handle, its first graph; docs/BENCHMARKS.md) is paid at capture,
        not by the first big request."""
        f = self.facts
        if not self.cudnn_suits((self.cudnn_tokens,)):
            return
        q, k, v = torch.randn(3, 64, f.num_heads, f.head_dim, device=f.device, dtype=f.dtype).unbind(0)
        cu, _, bound = cudnn_layout(torch.tensor([0, 64], dtype=torch.int32), (64,), 64)
        with torch.inference_mode():
            varlen_attention(q, k, v, cu.to(f.device), bound, None, "cudnn")

    def dense_shapes(self) -> int:
        """Shapes admitted to ``dense``."""
        return sum(n >= self.dense_after for n in self._dense_seen.values())

    def _dense_suits(self, seqlens) -> bool:
        f = self.facts
        return self.mode.picks and dense_supported(f.device, f.dtype, f.head_dim) and dense_layout(seqlens)

    def _admit_dense(self, runs: list[tuple[int, int]]) -> bool:
        """Counts a sighting of each run's shape; True when every one has been seen ``dense_after``
        times and holds a place among the ``dense_shapes`` admitted."""
        ok = True
        for shape in runs:
            seen = self._dense_seen.get(shape)
            if seen is None:
                if len(self._dense_seen) >= self.max_dense:
                    ok = False
                    continue
                seen = 0
            seen = min(seen + 1, self.dense_after)
            self._dense_seen[shape] = seen
            ok = ok and seen >= self.dense_after
        return ok

    def _dense_room(self, runs: list[tuple[int, int]]) -> bool:
        """Admits every run's shape to ``dense`` at once if all fit among the ``dense_shapes``."""
        new = {shape for shape in runs if shape not in self._dense_seen}
        if len(self._dense_seen) + len(new) > self.max_dense:
            return False
        for shape in runs:
            self._dense_seen[shape] = self.dense_after
        return True


__all__ = ["AttentionPolicy"]
