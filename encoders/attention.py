"""Variable-length (packed) non-causal attention with pluggable backends.

Both encoders pack many independent attention segments (image frames, audio windows) into one
token axis. A segment is described by ``cu_seqlens`` (int32, ``[S + 1]``, starting at 0); tokens of
different segments never attend to each other. Zero-length segments are allowed: the runtime uses
them to keep ``cu_seqlens`` at a fixed length per bucket.

Backends:
    ``sdpa``:   one ``scaled_dot_product_attention`` call per segment, driven by the segment lengths
                held on the host (``seqlens``). Any device; the CPU reference. Not capturable.
    ``varlen``: FlashAttention varlen on CUDA (the kernel of ``torch.nn.attention.varlen.varlen_attn``,
                called through its ATen op), driven by ``cu_seqlens`` on the device and a static
                ``max_seqlen``. Capturable in a CUDA graph.
    ``cudnn``:  cuDNN's fused attention on the packed layout, ``torch.ops.cudnn.sdpa_fwd`` from the
                optional ``nvidia-cudnn-frontend`` package (``pip install omnienc[cudnn]``), driven
                by ``cu_seqlens`` on the device and a static ``max_seqlen``. Capturable; a replay
                takes new ``cu_seqlens`` of the same length and bound. Never chosen by ``auto``:
                which of ``varlen`` and ``cudnn`` is faster depends on the layout (cuDNN wins on
                large and multi-segment vision packs, loses on small ones and on audio), so a
                caller measures (``available_backends``, ``fastest_backend``); the runtime also
                gives it big uncaptured vision calls, in ``cudnn_layout`` (``runtime.lane``).
    ``dense``:  equal-length segments as one ``[B, H, L, D]`` batch: consecutive segments of one length
                form a run, one ``scaled_dot_product_attention`` call per run, pinned to cuDNN on CUDA
                (1.3-1.6x FlashAttention varlen at head_dim 72 on an H200 when segments are long).
                Driven by ``seqlens`` on the host, so the layout is part of the call: uncaptured runs
                only (a graph would keep the layout it was captured with). ``dense_layout`` says
                whether a layout is worth it.
    ``auto``:   ``varlen`` for half-precision CUDA tensors whose head_dim is a multiple of 8 (what
                FlashAttention takes), ``sdpa`` otherwise.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ..cuda.timing import median_ms

BACKENDS = ("auto", "sdpa", "varlen", "cudnn", "dense")
CAPTURABLE = ("varlen", "cudnn")  # preference order: the first wins a tie in ``fastest_backend``
_HALF = (torch.float16, torch.bfloat16)
# ``dense_layout``: the fewest tokens per segment and the most runs for which ``dense`` is chosen
# (measured on an H200: dense over the 4-8 runs of each mixed32 vision pack beat one varlen call).
# A big call may have more runs, one per DENSE_RUN_TOKENS tokens: a run's SDPA costs ~60 us of host
# time per layer, about the GPU time of a vision layer over 1,024 tokens, so the host keeps ahead.
DENSE_MIN_SEQLEN = 128
DENSE_MAX_RUNS = 16
DENSE_RUN_TOKENS = 1024
# ``cudnn_layout``: the frontend builds (~16-45 ms) and caches one cuDNN graph per segment count and
# bound, whatever the lengths and token count; rounding both up makes a few graphs serve every layout.
CUDNN_SEGMENT_STEP = 16
CUDNN_BOUND_STEP = 1024


def varlen_supported(device: torch.device, dtype: torch.dtype, head_dim: int) -> bool:
    """Whether FlashAttention varlen can run these tensors."""
    return device.type == "cuda" and dtype in _HALF and head_dim % 8 == 0


@functools.lru_cache(maxsize=1)
def _cudnn_sdpa():
    """``torch.ops.cudnn.sdpa_fwd`` once ``nvidia-cudnn-frontend`` registered it, else None."""
    if not torch.cuda.is_available():
        return None
    try:
        import cudnn.sdpa.fwd.torch_op  # noqa: F401  (registers torch.ops.cudnn.sdpa_fwd)

        return torch.ops.cudnn.sdpa_fwd
    except Exception:  # noqa: BLE001 - missing package, or one that cannot load its libraries
        return None


def cudnn_available() -> bool:
    """Whether the ``cudnn`` backend can run here: CUDA, and ``nvidia-cudnn-frontend`` imports."""
    return _cudnn_sdpa() is not None


def _cudnn_takes(device: torch.device, dtype: torch.dtype, head_dim: int) -> bool:
    """cuDNN attention's limits, both ways of calling it: fp16/bf16 CUDA tensors, head_dim a
    multiple of 8 up to 128."""
    return device.type == "cuda" and dtype in _HALF and head_dim % 8 == 0 and head_dim <= 128


def cudnn_supported(device: torch.device, dtype: torch.dtype, head_dim: int) -> bool:
    """Whether the ``cudnn`` backend can run these tensors (fp16/bf16 on CUDA, head_dim a multiple
    of 8 up to 128: the encoders' 72 and 64 measured)."""
    return _cudnn_takes(device, dtype, head_dim) and cudnn_available()


def available_backends(device: torch.device, dtype: torch.dtype, head_dim: int) -> list[str]:
    """The capturable backends that can run these tensors, in preference order (``varlen``
    first: the default; ``cudnn`` where its package is installed). Empty on the CPU and for float32."""
    ok = {"varlen": varlen_supported, "cudnn": cudnn_supported}
    return [b for b in CAPTURABLE if ok[b](torch.device(device), dtype, head_dim)]


def dense_supported(device: torch.device, dtype: torch.dtype, head_dim: int) -> bool:
    """Whether the ``dense`` backend runs these tensors on cuDNN: fp16/bf16 CUDA tensors, head_dim a
    multiple of 8 up to 128, and a torch built with cuDNN. (Elsewhere ``dense`` still runs, through
    torch's default SDPA.)"""
    return _cudnn_takes(device, dtype, head_dim) and torch.backends.cudnn.is_available()


def segment_runs(seqlens: Sequence[int]) -> list[tuple[int, int]]:
    """``(count, length)`` of each run of consecutive segments with one length; zero-length
    segments hold no tokens and are skipped. ``[784, 784, 0, 784, 196] -> [(3, 784), (1, 196)]``."""
    runs: list[tuple[int, int]] = []
    for n in seqlens:
        if n <= 0:
            continue
        if runs and runs[-1][1] == n:
            runs[-1] = (runs[-1][0] + 1, n)
        else:
            runs.append((1, n))
    return runs


def dense_layout(seqlens: Sequence[int], min_seqlen: int = DENSE_MIN_SEQLEN, max_runs: int | None = None) -> bool:
    """Whether ``dense`` suits this layout: at most ``max_runs`` runs (one call each; default
    ``DENSE_MAX_RUNS``, or one per ``DENSE_RUN_TOKENS`` tokens if more) and every segment at least
    ``min_seqlen`` tokens (short segments gain little and would multiply cuDNN's cached graphs, one
    per ``[B, L]`` shape)."""
    runs = segment_runs(seqlens)
    if max_runs is None:
        tokens = sum(c * n for c, n in runs)
        max_runs = max(DENSE_MAX_RUNS, tokens // DENSE_RUN_TOKENS if DENSE_RUN_TOKENS > 0 else 0)
    return 0 < len(runs) <= max_runs and all(n >= min_seqlen for _, n in runs)


def cudnn_layout(cu_seqlens: torch.Tensor, seqlens: Sequence[int], max_seqlen: int) -> tuple[torch.Tensor, tuple[int, ...], int]:
    """The same segments in a layout whose ``cudnn`` graph recurs: zero-length segments appended up
    to a multiple of ``CUDNN_SEGMENT_STEP``, and the bound rounded up to a multiple of
    ``CUDNN_BOUND_STEP`` (an upper bound, as a bucket's). The frontend keys its graphs on those two,
    not on lengths or tokens, and builds one per key (tens of ms): exact counts and bounds would
    build one for nearly every uncaptured layout. Returns ``(cu_seqlens, seqlens, max_seqlen)``."""
    n = len(seqlens)
    count = -(-max(n, 1) // CUDNN_SEGMENT_STEP) * CUDNN_SEGMENT_STEP
    bound = -(-max(max_seqlen, 1) // CUDNN_BOUND_STEP) * CUDNN_BOUND_STEP
    if count > n:
        cu_seqlens = torch.cat([cu_seqlens, cu_seqlens[-1:].expand(count - n)])
    return cu_seqlens, (*seqlens, *[0] * (count - n)), bound


def cudnn_plan(plan):
    """A host plan (``VisionPlan`` / ``AudioPlan``) in ``cudnn_layout``: a new plan, the same tokens."""
    cu, seqlens, bound = cudnn_layout(plan.cu_seqlens, plan.seqlens, plan.max_seqlen)
    return dataclasses.replace(plan, cu_seqlens=cu, seqlens=seqlens, max_seqlen=bound)


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seqlens: Sequence[int]) -> torch.Tensor:
    """Attention over ``[T, H, D]`` segments, one ``[B, H, L, D]`` SDPA call per run of equal lengths,
    on cuDNN where ``dense_supported`` (torch's own kernel choice elsewhere).

    Host time per call matters (uncaptured runs are close to host-bound). Measured on an H200 host
    (same run): one run costs 57 us through torch's cuDNN attention op called directly against
    124 us through ``scaled_dot_product_attention`` pinned to cuDNN by ``sdpa_kernel`` (the context
    is the cost); eight runs cost 362 us through one context against 500 us by direct calls. So a
    single run calls the op, several share one context."""
    total = sum(n for n in seqlens if n > 0)
    if total != q.shape[0]:
        raise ValueError(f"segment lengths add up to {total}, but there are {q.shape[0]} tokens")
    heads, dim = q.shape[1:]
    runs = segment_runs(seqlens)
    cudnn = dense_supported(q.device, q.dtype, dim)
    scale = dim**-0.5
    if not runs:
        return torch.empty_like(q)
    if cudnn and len(runs) == 1:
        count, length = runs[0]
        four = [x.view(count, length, heads, dim).transpose(1, 2) for x in (q, k, v)]  # [B, H, L, D] views
        o = torch.ops.aten._scaled_dot_product_cudnn_attention(*four, None, False, scale=scale)[0]
        return o.transpose(1, 2).reshape(total, heads, dim)
    from contextlib import nullcontext

    from torch.nn.attention import SDPBackend, sdpa_kernel

    outs, start = [], 0
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION) if cudnn else nullcontext():
        for count, length in runs:
            n = count * length

            def bhld(x: torch.Tensor) -> torch.Tensor:  # [n, H, D] -> [B, H, L, D] (a view)
                return x[start : start + n].view(count, length, heads, dim).transpose(1, 2)

            o = F.scaled_dot_product_attention(bhld(q), bhld(k), bhld(v), scale=scale)
            outs.append(o.transpose(1, 2).reshape(n, heads, dim))
            start += n
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def resolve_backend(backend: str, device: torch.device, dtype: torch.dtype, head_dim: int) -> str:
    """Maps ``auto`` to a concrete backend for these tensors; validates the name."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {BACKENDS}")
    if backend == "auto":
        return "varlen" if varlen_supported(device, dtype, head_dim) else "sdpa"
    if backend == "varlen" and device.type != "cuda":
        raise ValueError("attention backend 'varlen' needs CUDA tensors; use 'sdpa' on the CPU")
    if backend == "cudnn" and not cudnn_supported(device, dtype, head_dim):
        if not cudnn_available():
            why = ("no CUDA device" if not torch.cuda.is_available() else
                   "nvidia-cudnn-frontend is not importable (pip install 'omnienc[cudnn]')")
        else:
            why = (f"it takes fp16/bf16 CUDA tensors with head_dim a multiple of 8 up to 128, "
                   f"got {device.type} {dtype} {head_dim}")
        raise ValueError(f"attention backend 'cudnn' is unavailable: {why}; use 'varlen' or 'auto'")
    return backend


def varlen_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    seqlens: Sequence[int] | None,
    backend: str = "auto",
) -> torch.Tensor:
    """Packed attention over segments.

    Args:
        q, k, v: ``[T, H, D]``, same dtype.
        cu_seqlens: ``[S + 1]`` int32 segment boundaries on q's device; ``cu_seqlens[-1] == T``.
        max_seqlen: an upper bound on the longest segment (used by ``varlen`` and ``cudnn``).
        seqlens: the S segment lengths on the host (used by ``sdpa`` and ``dense``); may include zeros.
        backend: one of ``BACKENDS``.

    Returns:
        ``[T, H, D]``; scale is ``D ** -0.5``.
    """
    backend = resolve_backend(backend, q.device, q.dtype, q.shape[-1])
    if backend == "varlen":
        # FlashAttention's varlen kernel through its ATen op: the kernel ``varlen_attn`` runs, without
        # that wrapper's per-call work (a custom-op dispatch, a backend check and a zero-filled RNG
        # state: ~170 us of host time and one extra kernel per call, measured on an H200 host).
        return torch.ops.aten._flash_attention_forward.default(
            q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, 0.0, False, False)[0]
    if backend == "cudnn":
        bound = max(int(max_seqlen), 1)  # the op refuses a bound of 0
        out, _ = _cudnn_sdpa()(q, k, v, 1.0 / math.sqrt(q.shape[-1]), cu_seqlens_q=cu_seqlens, cu_seqlens_kv=cu_seqlens,
                               max_seqlen_q=bound, max_seqlen_kv=bound, return_lse=False)
        return out
    if seqlens is None:
        raise ValueError(f"the {backend!r} attention backend needs the segment lengths on the host (seqlens)")
    if backend == "dense":
        return dense_attention(q, k, v, seqlens)
    out = torch.empty_like(q)
    start = 0
    for n in seqlens:
        if n:
            seg = slice(start, start + n)
            # [n, H, D] -> [H, n, D] for SDPA, and back.
            o = F.scaled_dot_product_attention(
                q[seg].transpose(0, 1), k[seg].transpose(0, 1), v[seg].transpose(0, 1)
            )
            out[seg] = o.transpose(0, 1)
        start += n
    if start != q.shape[0]:
        raise ValueError(f"segment lengths add up to {start}, but there are {q.shape[0]} tokens")
    return out


def fastest_backend(
    run: Callable[[str], Callable[[], object]],
    backends: Sequence[str],
    repeats: int = 20,
    *,
    timer: Callable[[Callable[[], object], int], float] | None = None,
) -> tuple[str, dict[str, float]]:
    """Times each candidate backend and returns the fastest with every timing.

    Args:
        run: ``run(backend)`` prepares the work with that backend (e.g. captures a bucket's graph)
            and returns a callable that does it once (e.g. replays the graph).
        backends: the candidates in preference order (``available_backends``): a tie goes to the
            earlier one.
        repeats: timed calls per candidate (after warm-up calls); the median counts.
        timer: ``timer(fn, repeats) -> ms``; default: CUDA events around each call on the current
            stream (``cuda.timing.median_ms``). Tests pass a fake.

    Returns:
        ``(best, {backend: ms})``. A candidate whose ``run`` or timing raises gets ``inf`` and a
        warning saying why; if every candidate fails, RuntimeError.
    """
    if not backends:
        raise ValueError("fastest_backend needs at least one candidate backend")
    timer = timer or median_ms
    times: dict[str, float] = {}
    for name in backends:
        try:
            times[name] = float(timer(run(name), repeats))
        except Exception as e:  # noqa: BLE001 - a backend that fails here is not a candidate
            warnings.warn(f"attention backend {name!r} failed while being timed and is not used: "
                          f"{type(e).__name__}: {e}", RuntimeWarning, stacklevel=2)
            times[name] = math.inf
    best = min(backends, key=lambda name: times[name])  # min keeps the first of equals
    if math.isinf(times[best]):
        raise RuntimeError(f"every candidate attention backend failed: {list(backends)}")
    return best, times
