"""The vision encoder's 2-D rotary embedding on the fused qkv projection.

The reference math (transformers' vision rotary, float32): with ``c, s`` the cos/sin of a token's
``head_dim / 2`` angles and ``q = [q1, q2]`` split in halves,
``q' = [q1*c - q2*s, q2*c + q1*s]``, rounded back to the input dtype; the same for k; v untouched.

Two implementations:
    ``rotary_qkv_torch``: plain PyTorch (any device; ~7 elementwise passes over q and k in float32).
    ``rotary_qkv_triton``: one Triton kernel that reads the ``[T, 3, H, D]`` projection once and
        writes rotated, contiguous q and k (float32 math, same rounding points). CUDA only; used
        when Triton is importable. Capturable in CUDA graphs.
``use_triton`` decides between them (the vision encoder's ``rotary_backend``).
"""

from __future__ import annotations

import functools

import torch


def rotary_qkv_torch(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, num_heads: int):
    """``qkv [T, 3*H*D]``, ``cos``/``sin [T, D/2]`` float32 -> q, k, v ``[T, H, D]`` (v a view)."""
    T = qkv.shape[0]
    q, k, v = qkv.view(T, 3, num_heads, -1).unbind(1)
    c, s = cos[:, None, :], sin[:, None, :]

    def rotate(x):
        x1, x2 = x.float().chunk(2, dim=-1)
        return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1).to(qkv.dtype)

    return rotate(q), rotate(k), v


@functools.lru_cache(maxsize=1)
def _kernel():
    """Builds the Triton kernel on first use; None when Triton is missing."""
    try:
        import triton
        import triton.language as tl
    except ImportError:
        return None

    @triton.jit
    def rotary_kernel(qkv_ptr, cos_ptr, sin_ptr, q_ptr, k_ptr, stride_tok, H: tl.constexpr, HALF: tl.constexpr,
                      BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr):
        t = tl.program_id(0).to(tl.int64)  # t * stride_tok passes 2**31 past ~620k tokens
        h = tl.arange(0, BLOCK_H)[:, None]
        d = tl.arange(0, BLOCK_D)[None, :]
        mask = (h < H) & (d < HALF)
        c = tl.load(cos_ptr + t * HALF + d, mask=d < HALF, other=0.0)
        s = tl.load(sin_ptr + t * HALF + d, mask=d < HALF, other=0.0)
        head = h * (2 * HALF)
        out = t * (H * 2 * HALF) + head + d
        for which in tl.static_range(2):  # 0: q, 1: k
            src = qkv_ptr + t * stride_tok + which * (H * 2 * HALF) + head + d
            x1 = tl.load(src, mask=mask, other=0.0).to(tl.float32)
            x2 = tl.load(src + HALF, mask=mask, other=0.0).to(tl.float32)
            y1 = x1 * c - x2 * s
            y2 = x2 * c + x1 * s
            dst = q_ptr if which == 0 else k_ptr
            tl.store(dst + out, y1.to(dst.dtype.element_ty), mask=mask)
            tl.store(dst + out + HALF, y2.to(dst.dtype.element_ty), mask=mask)

    return rotary_kernel


def triton_available() -> bool:
    return _kernel() is not None


def rotary_qkv_triton(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, num_heads: int):
    """Same contract as ``rotary_qkv_torch``; q and k come back contiguous. CUDA tensors only."""
    import triton

    T, width = qkv.shape
    head_dim = width // (3 * num_heads)
    half = head_dim // 2
    if qkv.stride(1) != 1 or not cos.is_contiguous() or not sin.is_contiguous():
        raise ValueError("rotary_qkv_triton needs qkv rows, cos and sin contiguous")
    q = torch.empty(T, num_heads, head_dim, dtype=qkv.dtype, device=qkv.device)
    k = torch.empty_like(q)
    if T:
        _kernel()[(T,)](qkv, cos, sin, q, k, qkv.stride(0), num_heads, half,
                        triton.next_power_of_2(num_heads), triton.next_power_of_2(half))
    v = qkv.view(T, 3, num_heads, head_dim)[:, 2]
    return q, k, v


def use_triton(backend: str, x: torch.Tensor) -> bool:
    """Whether the rotary of tensors like ``x`` runs as the Triton kernel: ``triton`` (required),
    ``auto`` (on CUDA when Triton is importable) or ``torch`` (never)."""
    if backend not in ("auto", "torch", "triton"):
        raise ValueError(f"unknown rotary backend {backend!r}; choose auto, torch or triton")
    possible = x.is_cuda and triton_available()
    if backend == "triton" and not possible:
        raise ValueError("rotary backend 'triton' needs CUDA tensors and an importable triton")
    return possible and backend != "torch"
