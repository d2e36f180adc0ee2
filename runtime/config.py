"""``RuntimeConfig``: every knob of the runtime, its default and why, in one frozen dataclass.

``EncoderRuntime(vision, audio, grid=..., device=..., config=RuntimeConfig(...))``; the runtime's
keyword arguments (``attention="fastest"``, ``exact_graphs=False``, ...) build one. Attention modes
are ``Attention`` members, and their strings (``"auto"``, ``"fastest"``, a backend name) are
accepted wherever a mode is, so YAML files and command lines keep working. The measurements behind
the defaults are in docs/BENCHMARKS.md. No torch here: the simulator reads the defaults too.
"""

from __future__ import annotations

import dataclasses
import enum
import os
from dataclasses import dataclass


class Attention(str, enum.Enum):
    """An attention mode: a backend of ``encoders.attention`` or a rule that picks one."""

    AUTO = "auto"  # each encoder's own backend (FlashAttention varlen on CUDA); uncaptured runs: see eager_attention
    FASTEST = "fastest"  # each graph bucket measures every capturable backend at capture and keeps the faster
    SDPA = "sdpa"  # per-segment SDPA: any device, the reference, not capturable
    VARLEN = "varlen"  # FlashAttention varlen: capturable
    CUDNN = "cudnn"  # cuDNN's packed varlen attention (the ``cudnn`` extra): capturable
    DENSE = "dense"  # runs of equal-length segments as batches through torch's cuDNN SDPA: uncaptured only

    def __str__(self) -> str:
        return self.value

    @property
    def picks(self) -> bool:
        """Whether this mode is a rule (``auto``, ``fastest``) rather than one backend."""
        return self in (Attention.AUTO, Attention.FASTEST)


def _mode(name: str, value, allowed: tuple[Attention, ...]) -> Attention:
    try:
        mode = Attention(value)
    except ValueError:
        mode = None
    if mode not in allowed:
        raise ValueError(f"{name}={value!r}: use one of {[m.value for m in allowed]}")
    return mode


def _count(name: str, value, least: int, hint: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name}={value!r}: use an integer >= {least}{hint}")


@dataclass(frozen=True)
class RuntimeConfig:
    """Every knob of ``EncoderRuntime``, validated at construction (a ``ValueError`` names the field).

    Attributes:
        use_cuda_graphs: capture CUDA graphs of the graph buckets; None: on CUDA when the attention
            is capturable (bf16/fp16), else off (the bucket code then runs eagerly).
        attention: every run's backend, or ``auto`` (the encoder's own) or ``fastest`` (each graph
            bucket measured at capture).
        eager_attention: uncaptured runs' backend, or ``auto``: cuDNN varlen for big vision calls
            (``eager_cudnn_tokens``) where the extra is installed, else ``dense`` for layouts of
            long equal segments once their shape recurs (``dense_after``; off by default), else
            ``attention``'s.
        eager_cudnn_tokens: the fewest tokens of an uncaptured vision call that takes cuDNN varlen
            under ``eager_attention=auto``: on long many-segment calls it beats FlashAttention and
            its host time per call hides behind the GPU; on smaller ones it lost (0: never).
        graph_cudnn_tokens: the smallest vision graph bucket (in tokens) captured on cuDNN varlen
            under ``attention=auto`` where the extra is installed: a replay has no host time to
            hide, and on long segments cuDNN's kernel beats FlashAttention's (docs/BENCHMARKS.md;
            0: never).
        eager_merge: a launch's packs on eager buckets run as one call of at most this many times
            the grid's largest bucket size: each call costs host work and launches per layer and
            gains nothing from running apart (0: each alone).
        dense_after: an uncaptured shape runs ``dense`` from this sighting: cuDNN builds a graph per
            [B, L] shape, which only shapes that recur often pay back (0: never, the default: on a
            held-out trace of varied requests admission cost more GPU time than it saved,
            docs/BENCHMARKS.md; set it for traffic of a few fixed sizes).
        dense_shapes: at most this many shapes ever run ``dense`` (per launching thread): each
            keeps host memory in torch's cache.
        exact_graphs: capture a graph of a pack's exact layout when it comes back and replay it,
            unpadded; None: on with CUDA graphs. Off by default: on a trace of varied requests a
            capture costs far more than the padding its replays save (docs/BENCHMARKS.md, "Cost
            model"); turn it on for traffic whose layouts repeat (inputs of a few fixed sizes).
            Such a capture runs while serving and marks the device's default CUDA generator
            capturing (README, "Exact-layout graphs, and a hazard").
        exact_at: a layout's graph is captured at this sighting (the sighting before builds every
            kernel plan the capture needs).
        exact_max_graphs: exact graphs kept per lane, least recently used out.
        exact_seen: layouts whose sightings are remembered per lane.
        exact_credit: captures are paid for by replays, a token bucket this big: traffic whose
            layouts come back once and never again would otherwise capture at every pack.
        exact_refill: packs run otherwise that earn one capture token.
        split_requests: a request larger than every bucket is cut into pieces at attention-segment
            boundaries (whole frames, whole audio windows: ``runtime.split``) that pack like any
            other demand, its outputs put back in order; else it runs eagerly alone, its memory
            growing with its length.
        max_transient_bytes: the most device memory one uncaptured call may take beyond what the
            runtime holds, so an engine can reserve it: pieces, merged eager calls and eager packs
            stay within it, and a request that cannot (one segment too large) fails alone, naming
            the bound. None: what the runtime's largest uncaptured call needs (a merged eager call
            where a lane has eager buckets, else its largest bucket's eager run) or its graphs
            reserve, whichever is more (``EncoderRuntime.memory()``).
        trace_path: if set, every request's shape is appended to this JSONL trace.
        plan_cache_size: packed host plans kept per lane (pinned on CUDA): traffic repeats shapes,
            and a cached plan stages with one copy.
        size_cache_size: request shapes whose demand and output rows are kept per lane.
        timings_pending: unresolved CUDA timings kept per lane; past that the oldest is waited for.
    """

    use_cuda_graphs: bool | None = None
    attention: Attention = Attention.AUTO
    eager_attention: Attention = Attention.AUTO
    eager_cudnn_tokens: int = 8192
    graph_cudnn_tokens: int = 8192
    dense_after: int = 0
    dense_shapes: int = 128
    eager_merge: int = 4
    exact_graphs: bool | None = False
    exact_at: int = 2
    exact_max_graphs: int = 16
    exact_seen: int = 1024
    exact_credit: int = 16
    exact_refill: int = 64
    split_requests: bool = True
    max_transient_bytes: int | None = None
    trace_path: str | os.PathLike | None = None
    plan_cache_size: int = 64
    size_cache_size: int = 4096
    timings_pending: int = 4096

    def __post_init__(self) -> None:
        if not isinstance(self.split_requests, bool):
            raise ValueError(f"split_requests={self.split_requests!r}: use True or False")
        if self.max_transient_bytes is not None:
            _count("max_transient_bytes", self.max_transient_bytes, 1, " (None: what the largest uncaptured call needs)")
        for name in ("use_cuda_graphs", "exact_graphs"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                raise ValueError(f"{name}={value!r}: use True, False or None (decided by the device)")
        modes = tuple(Attention)
        object.__setattr__(self, "attention", _mode("attention", self.attention, modes))
        eager = tuple(m for m in modes if m is not Attention.FASTEST)
        object.__setattr__(self, "eager_attention", _mode("eager_attention", self.eager_attention, eager))
        _count("eager_cudnn_tokens", self.eager_cudnn_tokens, 0, " (0: never)")
        _count("graph_cudnn_tokens", self.graph_cudnn_tokens, 0, " (0: never)")
        _count("eager_merge", self.eager_merge, 0, " (0: each eager pack alone)")
        _count("dense_after", self.dense_after, 0, " (0: never)")
        for name in ("dense_shapes", "exact_at", "exact_max_graphs", "exact_seen", "exact_credit",
                     "exact_refill", "plan_cache_size", "size_cache_size", "timings_pending"):
            _count(name, getattr(self, name), 1)

    def replace(self, **changes) -> RuntimeConfig:
        """A copy with ``changes`` (validated again)."""
        return dataclasses.replace(self, **changes)


__all__ = ["Attention", "RuntimeConfig"]
