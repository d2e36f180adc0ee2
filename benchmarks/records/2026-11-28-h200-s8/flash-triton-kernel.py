"""Packed (varlen) non-causal attention as one Triton kernel, for head dims that are not a power of two.

The vision encoder's head_dim is 72. FlashAttention-2 and cuDNN run it on tiles of a power-of-two
head dim (cuDNN's kernel for 72 is its 128-wide one), so most of their QK^T and PV work is padding.
Here the head dim is split into a power-of-two part and a short tail: 72 = 64 + 8, the tail read as
the last 16 columns (the smallest a tensor-core dot takes; its first 8 belong to the main part and are
zeroed in q), so the dots do 80 columns of work instead of 128.

Per program: one block of ``BLOCK_M`` query rows of one segment and one head; it walks the segment's
keys in blocks of ``BLOCK_N`` with the online softmax (running max and sum in float32, exp2 with the
scale folded in), P rounded to the input dtype before the PV dot as FlashAttention does, and writes
``O / sum`` in the input dtype. Grid: ``(cdiv(max_seqlen, BLOCK_M), segments, heads)``; programs past
their segment's end return at once, so one launch serves any layout with the same segment count and
bound: capturable in a CUDA graph, replayed with new ``cu_seqlens``.

``flash_attention(q, k, v, cu_seqlens, max_seqlen)`` on CUDA (or CPU tensors under Triton's
interpreter); the reference is ``encoders.attention``'s per-segment SDPA.
"""

from __future__ import annotations

import functools

import torch

from ._triton import interpreting, triton_available

try:
    import triton
    import triton.language as tl
except ImportError:  # optional: the other backends need nothing
    triton = tl = None

LOG2E = 1.4426950408889634


def split_head_dim(head_dim: int) -> tuple[int, int]:
    """``(main, tail)``: the largest power of two <= head_dim, and the rest rounded up to a power of
    two of at least 16 (0 when there is no rest): the tail window is the last ``tail`` columns.
    72 -> (64, 16), 64 -> (64, 0), 80 -> (64, 16), 100 -> (64, 64)."""
    if head_dim < 16:
        raise ValueError(f"flash attention needs head_dim >= 16, got {head_dim}")
    main = 1 << (head_dim.bit_length() - 1)
    rest = head_dim - main
    return main, (0 if rest == 0 else max(16, 1 << (rest - 1).bit_length()))


def default_blocks(max_seqlen: int) -> tuple[int, int, int, int]:
    """``(BLOCK_M, BLOCK_N, num_warps, num_stages)`` for a bound on the segment length."""
    if max_seqlen <= 1024:
        return 64, 64, 4, 3
    return 128, 64, 8, 3


@functools.lru_cache(maxsize=1)
def _kernel():
    @triton.jit
    def flash_fwd(q_ptr, k_ptr, v_ptr, o_ptr, cu_ptr, qk_scale,
                  sq_t, sq_h, sk_t, sk_h, sv_t, sv_h, so_t, so_h,
                  HEAD_DIM: tl.constexpr, D0: tl.constexpr, D1: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        pid_m = tl.program_id(0)
        seg = tl.program_id(1)
        head = tl.program_id(2)
        start = tl.load(cu_ptr + seg)
        length = tl.load(cu_ptr + seg + 1) - start
        if pid_m * BLOCK_M >= length:
            return
        rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        row_ok = rows < length
        tok = (start + rows).to(tl.int64)
        d0 = tl.arange(0, D0)
        q0 = tl.load(q_ptr + tok[:, None] * sq_t + head * sq_h + d0[None, :], mask=row_ok[:, None], other=0.0)
        m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
        l_i = tl.zeros((BLOCK_M,), tl.float32)
        acc0 = tl.zeros((BLOCK_M, D0), tl.float32)
        if D1 > 0:
            # The tail: the last D1 columns (a window overlapping the main part, so every load is in
            # bounds and unmasked along D); q's overlapping columns are zeroed, so QK^T counts each
            # column once, and only the columns past D0 of the PV window are stored.
            d1 = HEAD_DIM - D1 + tl.arange(0, D1)
            tail = d1 >= D0
            q1 = tl.load(q_ptr + tok[:, None] * sq_t + head * sq_h + d1[None, :], mask=row_ok[:, None], other=0.0)
            q1 = tl.where(tail[None, :], q1, 0.0)
            acc1 = tl.zeros((BLOCK_M, D1), tl.float32)
        for n0 in range(0, length, BLOCK_N):
            cols = n0 + tl.arange(0, BLOCK_N)
            col_ok = cols < length
            key = (start + cols).to(tl.int64)
            k0 = tl.load(k_ptr + key[:, None] * sk_t + head * sk_h + d0[None, :], mask=col_ok[:, None], other=0.0)
            s = tl.dot(q0, tl.trans(k0))
            if D1 > 0:
                k1 = tl.load(k_ptr + key[:, None] * sk_t + head * sk_h + d1[None, :], mask=col_ok[:, None], other=0.0)
                s1 = tl.dot(q1, tl.trans(k1))
                s = s + s1
            s = tl.where(col_ok[None, :], s * qk_scale, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            p = tl.math.exp2(s - m_new[:, None])
            alpha = tl.math.exp2(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, 1)
            p = p.to(v_ptr.dtype.element_ty)
            v0 = tl.load(v_ptr + key[:, None] * sv_t + head * sv_h + d0[None, :], mask=col_ok[:, None], other=0.0)
            acc0 = acc0 * alpha[:, None] + tl.dot(p, v0)
            if D1 > 0:
                v1 = tl.load(v_ptr + key[:, None] * sv_t + head * sv_h + d1[None, :], mask=col_ok[:, None], other=0.0)
                acc1 = acc1 * alpha[:, None] + tl.dot(p, v1)
            m_i = m_new
        out = o_ptr + tok[:, None] * so_t + head * so_h
        tl.store(out + d0[None, :], (acc0 / l_i[:, None]).to(o_ptr.dtype.element_ty), mask=row_ok[:, None])
        if D1 > 0:
            tl.store(out + d1[None, :], (acc1 / l_i[:, None]).to(o_ptr.dtype.element_ty),
                     mask=row_ok[:, None] & tail[None, :])

    return flash_fwd


def flash_supported(device: torch.device, dtype: torch.dtype, head_dim: int) -> bool:
    """Whether the kernel runs these tensors: fp16/bf16 on CUDA (any dtype the interpreter takes on
    the CPU with ``TRITON_INTERPRET=1``), head_dim >= 16, Triton importable."""
    if not triton_available() or head_dim < 16:
        return False
    if device.type == "cuda":
        return dtype in (torch.float16, torch.bfloat16)
    return device.type == "cpu" and interpreting()


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
                    max_seqlen: int, blocks: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """Attention over the segments of packed ``[T, H, D]`` q, k, v (each with unit stride along D;
    token and head strides free, e.g. views of one qkv tensor). ``cu_seqlens``: int32 ``[S + 1]`` on
    q's device; ``max_seqlen``: a bound on the longest segment. Returns a new ``[T, H, D]`` tensor;
    rows outside every segment are left unwritten. Scale ``D ** -0.5``."""
    T, H, D = q.shape
    if not flash_supported(q.device, q.dtype, D):
        raise ValueError(f"flash attention: needs Triton and fp16/bf16 CUDA tensors with head_dim >= 16, "
                         f"got {q.device.type} {q.dtype} head_dim {D}")
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.shape != q.shape or x.stride(2) != 1:
            raise ValueError(f"flash attention: {name} must be [T, H, D] like q with unit stride along D, "
                             f"got shape {tuple(x.shape)} strides {x.stride()}")
    o = torch.empty_like(q, memory_format=torch.contiguous_format)
    segments = cu_seqlens.shape[0] - 1
    bound = max(int(max_seqlen), 1)
    block_m, block_n, warps, stages = blocks or default_blocks(bound)
    d0, d1 = split_head_dim(D)
    grid = (triton.cdiv(bound, block_m), segments, H)
    _kernel()[grid](q, k, v, o, cu_seqlens, D**-0.5 * LOG2E,
                    q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
                    o.stride(0), o.stride(1),
                    HEAD_DIM=D, D0=d0, D1=d1, BLOCK_M=block_m, BLOCK_N=block_n,
                    num_warps=warps, num_stages=stages)
    return o


__all__ = ["default_blocks", "flash_attention", "flash_supported", "split_head_dim"]
