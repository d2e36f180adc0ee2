"""Residual add + LayerNorm in one pass: ``x_new = x + (y + bias)``, ``h = LayerNorm(x_new)``.

The encoders' blocks do, twice per block,

    x = x + F.linear(attn, W_proj, b_proj)          # or + fc2(...)
    h = F.layer_norm(x, (N,), ln_w, ln_b, eps)

which is two memory passes (the add reads 2 rows and writes 1, the norm reads 1 and writes 1). The
fused op reads ``x`` and ``y`` once and writes ``x_new`` and ``h`` once.

Rounding points are the unfused sequence's on the same inputs, so the fused op can replace it:
    ``y + bias``   rounded to the activation dtype (what ``F.linear``'s bias epilogue returns is
                   already rounded, so callers that keep the bias in the GEMM pass ``bias=None``);
    ``x + ...``    rounded to the activation dtype: ``x_new`` is bit-identical to the unfused sum;
    ``clamp``      optional, applied to the rounded sum (the audio encoder's fp16 clamp:
                   ``x.clamp(-c, c)`` before the next norm), the bound rounded to the dtype first
                   as ``Tensor.clamp`` does;
    LayerNorm      float32 statistics of the rounded ``x_new`` (mean, then the biased variance of
                   the centred values), float32 affine, one rounding: ``h`` is within one rounding
                   of ``F.layer_norm``'s (which uses Welford and ``rsqrt`` in float32).

Implementations: ``add_layernorm_torch`` (the reference, any device; in float32 exactly the unfused
code) and ``add_layernorm_triton`` (one kernel; CUDA, or CPU under ``TRITON_INTERPRET=1``; a
block of rows per program, every row whole in registers). ``add_layernorm`` picks one (``impl``).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ._triton import triton_available, use_triton

try:
    import triton
    import triton.language as tl
except ImportError:  # the Triton kernel is optional; the reference needs nothing
    triton = tl = None


def add_layernorm_torch(x, y, bias, weight, ln_bias, eps: float, clamp: float | None = None):
    """The reference: ``x_new = x + (y + bias)`` (clamped to ``[-clamp, clamp]`` if given),
    ``h = F.layer_norm(x_new)``. Returns ``(x_new, h)``."""
    x = x + (y if bias is None else y + bias)
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x, F.layer_norm(x, (x.shape[-1],), weight, ln_bias, eps)


@functools.lru_cache(maxsize=1)
def _kernel():
    """The Triton kernel, built on first use."""

    @triton.jit
    def add_layernorm_kernel(x_ptr, y_ptr, bias_ptr, w_ptr, b_ptr, xo_ptr, h_ptr, rows, N,
                             stride_x, stride_y, stride_xo, stride_h, eps, clamp,
                             HAS_BIAS: tl.constexpr, HAS_CLAMP: tl.constexpr,
                             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        row = (tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M))[:, None]  # [BLOCK_M, 1]
        col = tl.arange(0, BLOCK_N)[None, :]  # [1, BLOCK_N]
        in_row = col < N
        mask = (row < rows) & in_row
        dtype = xo_ptr.dtype.element_ty
        x = tl.load(x_ptr + row * stride_x + col, mask=mask, other=0.0).to(tl.float32)
        y = tl.load(y_ptr + row * stride_y + col, mask=mask, other=0.0).to(tl.float32)
        if HAS_BIAS:
            bias = tl.load(bias_ptr + col, mask=in_row, other=0.0).to(tl.float32)
            y = (y + bias).to(dtype).to(tl.float32)  # rounded, as ``y + bias`` in torch
        s = (x + y).to(dtype).to(tl.float32)  # rounded, as ``x + y`` in torch
        if HAS_CLAMP:  # comparisons keep NaN, as Tensor.clamp does
            s = tl.where(s > clamp, clamp, tl.where(s < -clamp, -clamp, s))
        tl.store(xo_ptr + row * stride_xo + col, s.to(dtype), mask=mask)
        mean = tl.sum(s, axis=1) / N  # masked columns hold 0
        centred = tl.where(in_row, s - mean[:, None], 0.0)
        rstd = tl.math.rsqrt(tl.sum(centred * centred, axis=1) / N + eps)
        w = tl.load(w_ptr + col, mask=in_row, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + col, mask=in_row, other=0.0).to(tl.float32)
        h = centred * rstd[:, None] * w + b
        tl.store(h_ptr + row * stride_h + col, h.to(dtype), mask=mask)

    return add_layernorm_kernel


def _launch_config(n: int) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps): whole rows of ``n`` in one tile of up to 4096 elements."""
    block_n = triton.next_power_of_2(n)
    block_m = max(1, min(64, 4096 // block_n))
    return block_m, block_n, 8 if block_m * block_n >= 4096 else 4


@functools.lru_cache(maxsize=16)
def _held(value: float, dtype: torch.dtype) -> float:
    """``value`` as ``dtype`` holds it (``Tensor.clamp`` rounds its bounds to the tensor's dtype)."""
    return float(torch.tensor(value, dtype=dtype))


def add_layernorm_triton(x, y, bias, weight, ln_bias, eps: float, clamp: float | None = None):
    """Same contract as ``add_layernorm_torch``, one kernel. ``x``, ``y``: ``[..., N]`` of one
    float dtype, rows of unit stride; ``bias`` (or None), ``weight``, ``ln_bias``: ``[N]``.
    Returns new contiguous ``(x_new, h)`` of x's shape and dtype."""
    if not triton_available():
        raise ValueError("add_layernorm_triton needs triton")
    if x.shape != y.shape or x.dtype != y.dtype:
        raise ValueError(f"x {tuple(x.shape)} {x.dtype} and y {tuple(y.shape)} {y.dtype} must match")
    n = x.shape[-1]
    for name, t in (("bias", bias), ("weight", weight), ("ln_bias", ln_bias)):
        if t is not None and (t.shape != (n,) or not t.is_contiguous()):
            raise ValueError(f"{name} must be a contiguous [{n}] vector, got {tuple(t.shape)}")
    x2, y2 = x.reshape(-1, n), y.reshape(-1, n)
    if x2.stride(-1) != 1 or y2.stride(-1) != 1:
        raise ValueError("add_layernorm_triton needs rows of unit stride")
    rows = x2.shape[0]
    x_new = torch.empty(rows, n, dtype=x.dtype, device=x.device)
    h = torch.empty_like(x_new)
    if rows and n:
        block_m, block_n, warps = _launch_config(n)
        c = 0.0 if clamp is None else _held(float(clamp), x.dtype)
        _kernel()[(triton.cdiv(rows, block_m),)](
            x2, y2, x2 if bias is None else bias, weight, ln_bias, x_new, h, rows, n,
            x2.stride(0), y2.stride(0), x_new.stride(0), h.stride(0), float(eps), c,
            HAS_BIAS=bias is not None, HAS_CLAMP=clamp is not None, BLOCK_M=block_m, BLOCK_N=block_n,
            num_warps=warps,
        )
    return x_new.view(x.shape), h.view(x.shape)


def add_layernorm(x, y, bias, weight, ln_bias, eps: float, clamp: float | None = None, impl: str = "auto"):
    """``(x + (y + bias), LayerNorm(that))`` in one pass where it can (see the module docstring).

    Args:
        x: ``[..., N]`` the residual stream.
        y: ``[..., N]`` what is added (a GEMM's output), x's dtype.
        bias: ``[N]`` added to ``y`` first (rounded), or None.
        weight, ln_bias: the LayerNorm's ``[N]`` scale and shift.
        eps: the LayerNorm's epsilon.
        clamp: if given, ``x_new`` is clamped to ``[-clamp, clamp]`` before the norm.
        impl: ``auto`` (the Triton kernel on CUDA when Triton imports, else the reference),
            ``triton`` or ``torch``.

    Returns:
        ``(x_new, h)``, both like ``x``.
    """
    if use_triton(impl, x, "add_layernorm"):
        return add_layernorm_triton(x, y, bias, weight, ln_bias, eps, clamp)
    return add_layernorm_torch(x, y, bias, weight, ln_bias, eps, clamp)
