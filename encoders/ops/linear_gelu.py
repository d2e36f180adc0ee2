"""Linear + bias + GELU: the first half of both encoders' MLPs, ``act(F.linear(h, W_fc1, b_fc1))``.

The vision encoder uses tanh-GELU (``gelu_pytorch_tanh``), the audio encoder exact (erf) GELU; each
stays exact. Three ways to run it (``linear_gelu(..., impl=)``), to be A/B'd per shape:

    ``torch``     ``F.gelu(F.linear(x, w, b), approximate=)``: today's code and the reference. The
                  GEMM adds the bias in its epilogue (one rounding), the GELU is a second pass.
    ``epilogue``  ``torch._addmm_activation(b, x, w.T, use_gelu=True)``: cuBLASLt's GELU_BIAS
                  epilogue, one pass and one rounding of ``gelu(acc + b)``. On CUDA that GELU is
                  the tanh approximation (PyTorch's own fallback for it applies ``gelu(approximate=
                  "tanh")``), so this serves the vision encoder only. On the CPU the same call
                  applies erf GELU, so it is refused there rather than silently meaning another thing.
    ``triton``    ``F.linear(x, w)`` without bias, then ``bias_gelu``: one Triton pass computing
                  ``gelu(y + b)`` with ``y + b`` rounded to the dtype first (as ``F.gelu(y + b)``),
                  the GELU in float32 as PyTorch's kernels do, one more rounding. It moves the same
                  bytes as ``torch`` (the bias was free in the GEMM epilogue); it can only win on
                  the elementwise kernel's own efficiency.

``bias_gelu_torch`` / ``bias_gelu_triton`` are the elementwise op alone (``F.gelu(y + b)``).
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

IMPLS = ("torch", "epilogue", "triton")
APPROXIMATIONS = ("none", "tanh")


def _check_approximate(approximate: str) -> None:
    if approximate not in APPROXIMATIONS:
        raise ValueError(f"approximate must be one of {APPROXIMATIONS}, got {approximate!r}")


def bias_gelu_torch(y: torch.Tensor, b: torch.Tensor | None, approximate: str = "none") -> torch.Tensor:
    """The reference: ``F.gelu(y + b, approximate=)``."""
    _check_approximate(approximate)
    return F.gelu(y if b is None else y + b, approximate=approximate)


@functools.lru_cache(maxsize=1)
def _kernel():
    """The Triton kernel, built on first use."""

    @triton.jit
    def bias_gelu_kernel(y_ptr, b_ptr, o_ptr, rows, N, stride_y, stride_o,
                         HAS_BIAS: tl.constexpr, TANH: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        row = (tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M))[:, None]
        col = tl.program_id(1).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]
        in_row = col < N
        mask = (row < rows) & in_row
        dtype = o_ptr.dtype.element_ty
        z = tl.load(y_ptr + row * stride_y + col, mask=mask, other=0.0).to(tl.float32)
        if HAS_BIAS:
            z = (z + tl.load(b_ptr + col, mask=in_row, other=0.0).to(tl.float32)).to(dtype).to(tl.float32)
        if TANH:
            # PyTorch: 0.5 z (1 + tanh(u)), u = sqrt(2/pi) (z + 0.044715 z^3); here as the equal
            # z / (1 + exp(-2u)) (no tanh in Triton's interpreter, and no cancellation for z < 0)
            u = 0.7978845608028654 * (z + 0.044715 * (z * z * z))
            g = z / (1.0 + tl.exp(-2.0 * u))
        else:  # PyTorch: z * 0.5 * (1 + erf(z / sqrt(2)))
            g = z * 0.5 * (1.0 + tl.math.erf(z * 0.7071067811865476))
        tl.store(o_ptr + row * stride_o + col, g.to(dtype), mask=mask)

    return bias_gelu_kernel


def bias_gelu_triton(y: torch.Tensor, b: torch.Tensor | None, approximate: str = "none") -> torch.Tensor:
    """Same contract as ``bias_gelu_torch``, one kernel: ``y [..., N]`` with rows of unit stride,
    ``b [N]`` contiguous (or None). Returns a new contiguous tensor like ``y``."""
    _check_approximate(approximate)
    if not triton_available():
        raise ValueError("bias_gelu_triton needs triton")
    n = y.shape[-1]
    if b is not None and (b.shape != (n,) or not b.is_contiguous() or b.dtype != y.dtype):
        raise ValueError(f"b must be a contiguous [{n}] vector of y's dtype, got {tuple(b.shape)} {b.dtype}")
    y2 = y.reshape(-1, n)
    if y2.stride(-1) != 1:
        raise ValueError("bias_gelu_triton needs rows of unit stride")
    out = torch.empty(y2.shape, dtype=y.dtype, device=y.device)
    rows = y2.shape[0]
    if rows and n:
        block_n = min(1024, triton.next_power_of_2(n))
        block_m = max(1, 4096 // block_n)
        grid = (triton.cdiv(rows, block_m), triton.cdiv(n, block_n))
        _kernel()[grid](y2, y2 if b is None else b, out, rows, n, y2.stride(0), out.stride(0),
                                      HAS_BIAS=b is not None, TANH=approximate == "tanh",
                                      BLOCK_M=block_m, BLOCK_N=block_n, num_warps=4)
    return out.view(y.shape)


def bias_gelu(y: torch.Tensor, b: torch.Tensor | None, approximate: str = "none", impl: str = "auto") -> torch.Tensor:
    """``F.gelu(y + b, approximate=)``; ``impl``: ``auto`` (Triton on CUDA when it imports),
    ``triton`` or ``torch``."""
    if use_triton(impl, y, "bias_gelu"):
        return bias_gelu_triton(y, b, approximate)
    return bias_gelu_torch(y, b, approximate)


def _addmm_gelu(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch._addmm_activation(b, x, w.T, use_gelu=True)`` over the last dim of ``x``."""
    x2 = x.reshape(-1, x.shape[-1])
    return torch._addmm_activation(b, x2, w.t(), use_gelu=True).view(*x.shape[:-1], w.shape[0])


def linear_gelu(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, approximate: str = "none",
                impl: str = "torch") -> torch.Tensor:
    """``F.gelu(F.linear(x, w, b), approximate=)`` (see the module docstring for ``impl``).

    Args:
        x: ``[..., K]``; w: ``[N, K]``; b: ``[N]``, all of one dtype.
        approximate: ``tanh`` (vision: ``gelu_pytorch_tanh``) or ``none`` (audio: exact GELU).
        impl: ``torch`` (today's two calls), ``epilogue`` (cuBLASLt GELU epilogue; CUDA and
            ``tanh`` only) or ``triton`` (GEMM without bias + one bias+GELU pass).

    Returns:
        ``[..., N]``.
    """
    _check_approximate(approximate)
    if impl == "torch":
        return F.gelu(F.linear(x, w, b), approximate=approximate)
    if impl == "epilogue":
        if approximate != "tanh":
            raise ValueError("linear_gelu impl 'epilogue': cuBLASLt's GELU epilogue is the tanh "
                             "approximation; exact GELU needs impl 'torch' or 'triton'")
        if not x.is_cuda:
            raise ValueError("linear_gelu impl 'epilogue' needs CUDA tensors "
                             "(on the CPU torch._addmm_activation applies exact GELU)")
        return _addmm_gelu(x, w, b)
    if impl == "triton":
        return bias_gelu(F.linear(x, w), b, approximate, impl="triton")
    raise ValueError(f"linear_gelu: unknown impl {impl!r}; choose one of {IMPLS}")
