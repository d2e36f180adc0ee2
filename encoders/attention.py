"""Variable-length (packed) non-causal attention with pluggable backends.

Both encoders pack many independent attention segments (image frames, audio windows) into one
token axis. A segment is described by ``cu_seqlens`` (int32, ``[S + 1]``, starting at 0); tokens of
different segments never attend to each other. Zero-length segments are allowed: the runtime uses
them to keep ``cu_seqlens`` at a fixed length per bucket.

Backends:
    ``sdpa``:   one ``scaled_dot_product_attention`` call per segment, driven by the segment lengths
                held on the host (``seqlens``). Any device; the CPU reference. Not capturable.
    ``varlen``: ``torch.nn.attention.varlen.varlen_attn`` (FlashAttention varlen) on CUDA, driven by
                ``cu_seqlens`` on the device and a static ``max_seqlen``. Capturable in a CUDA graph.
    ``auto``:   ``varlen`` for half-precision CUDA tensors whose head_dim is a multiple of 8 (what
                FlashAttention takes), ``sdpa`` otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

BACKENDS = ("auto", "sdpa", "varlen")


def varlen_supported(device: torch.device, dtype: torch.dtype, head_dim: int) -> bool:
    """Whether FlashAttention varlen can run these tensors."""
    return device.type == "cuda" and dtype in (torch.float16, torch.bfloat16) and head_dim % 8 == 0


def resolve_backend(backend: str, device: torch.device, dtype: torch.dtype, head_dim: int) -> str:
    """Maps ``auto`` to a concrete backend for these tensors; validates the name."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {BACKENDS}")
    if backend == "auto":
        return "varlen" if varlen_supported(device, dtype, head_dim) else "sdpa"
    if backend == "varlen" and device.type != "cuda":
        raise ValueError("attention backend 'varlen' needs CUDA tensors; use 'sdpa' on the CPU")
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
        max_seqlen: an upper bound on the longest segment (used by ``varlen``).
        seqlens: the S segment lengths on the host (used by ``sdpa``); may include zeros.
        backend: one of ``BACKENDS``.

    Returns:
        ``[T, H, D]``; scale is ``D ** -0.5``.
    """
    backend = resolve_backend(backend, q.device, q.dtype, q.shape[-1])
    if backend == "varlen":
        from torch.nn.attention.varlen import varlen_attn

        return varlen_attn(q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen)
    if seqlens is None:
        raise ValueError("the 'sdpa' attention backend needs the segment lengths on the host (seqlens)")
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
