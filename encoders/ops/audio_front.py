"""The audio encoder's convolutional front-end: three stride-2 3x3 convolutions, each followed by
exact GELU and zeroing of the time steps beyond each chunk's valid length.

The reference (``impl="torch"``, what the CPU and float32 paths run) is a chain of passes over the
largest activations of the encoder (conv1's output is ``[C, 480, 64, 50]``):

    conv1      ``F.unfold`` (im2col) + ``F.linear`` with K = 9, written channels-last
    conv2, 3   cuDNN channels-last, bias in the convolution
    after each ``F.gelu(x) * keep`` (``keep = t < valid[c]``): a GELU pass and a mask pass
    at the end ``permute(0, 3, 1, 2).reshape(C, t, ch * f)``: a copy

The fused path runs one Triton pass per convolution's epilogue:

    ``conv1_gelu_mask``   conv1 as one aligned GEMM without bias over patches cut by one strided
                          copy (``conv1_patches``: taps padded to 16 columns), then the epilogue
    ``bias_gelu_mask``    after a convolution computed *without* bias: + bias, GELU, mask, and for
                          the last one the flatten to ``[C, t, ch * f]``, one read and one store

(Measured and dropped: conv1 as one Triton kernel computing the 9 taps itself, 10.0 ms against the
reference's 1.44 ms for 80 chunks on an H200, ``docs/BENCHMARKS.md``.)

Numerics: the epilogue works in float32 from the convolution's rounded output and rounds once at
the end (+ bias, GELU, mask), where the reference rounds the biased convolution's output and then
the GELU: within about one rounding of it. ``keep`` multiplies, as the reference does (a masked
step is ``+-0``; NaN stays NaN).

Layouts: ``[C, ch, f, t]`` tensors here are channels-last in memory (physically ``[C, f, t, ch]``),
cuDNN's native layout; the flattened output is a contiguous ``[C, t, ch * f]`` whose feature index
is ``channel * f + frequency`` (channel-major, as transformers flattens it).

``audio_front`` is the whole front-end as the encoder runs it; ``conv_gelu_mask`` one of the later
convolutions with its epilogue.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ._triton import triton_available, use_triton

try:
    import triton
    import triton.language as tl
except ImportError:  # the Triton kernels are optional; the reference needs nothing
    triton = tl = None


def conv_len(n: int) -> int:
    """Output length of one Conv2d(k=3, s=2, p=1) along an axis; 0 stays 0."""
    return (n - 1) // 2 + 1 if n > 0 else 0


# ---- references -------------------------------------------------------------------------------------


def gelu_mask(y: torch.Tensor, valid: torch.Tensor, flatten: bool = False) -> torch.Tensor:
    """The reference epilogue of a biased convolution: ``F.gelu(y) * (t < valid[c])``.

    Args:
        y: ``[C, ch, f, t]``.
        valid: ``[C]`` int64 valid time steps per chunk.
        flatten: return ``[C, t, ch * f]`` (channel-major features) instead of ``[C, ch, f, t]``.
    """
    keep = torch.arange(y.shape[-1], device=y.device) < valid[:, None]  # [C, t]
    x = F.gelu(y) * keep[:, None, None, :].to(y.dtype)
    if not flatten:
        return x
    C, ch, f, t = x.shape
    return x.permute(0, 3, 1, 2).reshape(C, t, ch * f)


def conv1_gelu_mask_torch(chunks: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                          valid: torch.Tensor) -> torch.Tensor:
    """The reference: conv1 as a GEMM over the 3x3 patches (``F.unfold`` + ``F.linear``), written
    channels-last, then ``gelu_mask``. Same contract as ``conv1_gelu_mask``."""
    C = chunks.shape[0]
    x = chunks[:, None].to(weight.dtype)  # [C, 1, mel, F]
    f1, t1 = conv_len(x.shape[2]), conv_len(x.shape[3])
    patches = F.unfold(x, 3, padding=1, stride=2).transpose(1, 2)  # [C, f1 * t1, 9]
    x = F.linear(patches, weight.view(weight.shape[0], -1), bias)  # [C, f1 * t1, ch]
    x = x.view(C, f1, t1, -1).permute(0, 3, 1, 2)  # [C, ch, f1, t1], channels-last memory
    return gelu_mask(x, valid)


def bias_gelu_mask_torch(y: torch.Tensor, bias: torch.Tensor, valid: torch.Tensor,
                         flatten: bool = False) -> torch.Tensor:
    """``gelu_mask(y + bias)``: the reference of ``bias_gelu_mask`` (the encoder's reference path
    keeps the bias in the convolution and calls ``gelu_mask`` itself)."""
    return gelu_mask(y + bias[:, None, None], valid, flatten)


# ---- Triton kernels ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _epilogue_kernel():
    """The epilogue's Triton kernel, built on first use."""

    @triton.jit
    def epilogue_kernel(y_ptr, b_ptr, valid_ptr, o_ptr, f, t, ch, t_blocks,
                        sy_c, sy_ch, sy_f, sy_t, so_c, so_ch, so_f, so_t, s_valid,
                        BLOCK_T: tl.constexpr, BLOCK_F: tl.constexpr, BLOCK_CH: tl.constexpr):
        # a tile: one chunk, BLOCK_T time steps x every frequency (fastest) x BLOCK_CH channels, so
        # it covers whole runs of the flattened output's (channel, frequency) features, and reads
        # runs of channels from a channels-last input
        tile = tl.program_id(0).to(tl.int64)
        c = tile // t_blocks
        r = tl.arange(0, BLOCK_T * BLOCK_F)[:, None]  # [BLOCK_T * BLOCK_F, 1]
        fi = r % BLOCK_F
        ti = (tile % t_blocks) * BLOCK_T + r // BLOCK_F
        col = (tl.program_id(1).to(tl.int64) * BLOCK_CH + tl.arange(0, BLOCK_CH))[None, :]  # [1, BLOCK_CH]
        in_cols = col < ch
        mask = (fi < f) & (ti < t) & in_cols
        dtype = o_ptr.dtype.element_ty
        z = tl.load(y_ptr + c * sy_c + col * sy_ch + fi * sy_f + ti * sy_t, mask=mask, other=0.0).to(tl.float32)
        z += tl.load(b_ptr + col, mask=in_cols, other=0.0).to(tl.float32)
        keep = (ti < tl.load(valid_ptr + c * s_valid)).to(tl.float32)
        g = z * 0.5 * (1.0 + tl.math.erf(z * 0.7071067811865476)) * keep  # exact GELU, masked
        tl.store(o_ptr + c * so_c + col * so_ch + fi * so_f + ti * so_t, g.to(dtype), mask=mask)

    return epilogue_kernel


def _check_vectors(op: str, ch: int, bias: torch.Tensor, valid: torch.Tensor, C: int, dtype) -> None:
    if bias.shape != (ch,) or not bias.is_contiguous() or bias.dtype != dtype:
        raise ValueError(f"{op}: bias must be a contiguous [{ch}] vector of dtype {dtype}, "
                         f"got {tuple(bias.shape)} {bias.dtype}")
    if valid.shape != (C,) or valid.dtype != torch.int64:
        raise ValueError(f"{op}: valid must be a [{C}] int64 vector, got {tuple(valid.shape)} {valid.dtype}")


def _epilogue_tile(f: int, t: int, ch: int) -> tuple[int, int, int]:
    """(time steps, frequencies, channels) of an epilogue tile: every frequency, up to 128
    channels, time steps up to about 4096 elements."""
    block_f = triton.next_power_of_2(f)
    block_ch = min(128, triton.next_power_of_2(ch), max(16, 4096 // block_f))
    block_t = min(triton.next_power_of_2(t), max(1, 4096 // (block_f * block_ch)))
    return block_t, block_f, block_ch


def conv1_patches(chunks: torch.Tensor, dtype: torch.dtype, k: int = 16) -> torch.Tensor:
    """The 3x3 stride-2 patches of one-channel chunks ``[C, mel, F]`` as ``[C * f1 * t1, k]`` rows
    (taps row-major, zero padding at the borders, then ``k - 9`` zero columns so a GEMM over them
    is aligned), in ``dtype``: one pad and one strided copy, where ``F.unfold`` launches one kernel
    per chunk."""
    C, mel, frames = chunks.shape
    f1, t1 = conv_len(mel), conv_len(frames)
    x = F.pad(chunks.to(dtype), (1, 1, 1, 1))  # [C, mel + 2, F + 2]
    sc, sf, st = x.stride()
    taps = x.as_strided((C, f1, t1, 3, 3), (sc, 2 * sf, 2 * st, sf, st))
    out = torch.zeros(C * f1 * t1, k, dtype=dtype, device=chunks.device)
    out[:, :9].view(C, f1, t1, 3, 3).copy_(taps)
    return out


def conv1_gelu_mask_triton(chunks: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                           valid: torch.Tensor) -> torch.Tensor:
    """Same contract as ``conv1_gelu_mask``: the patches (``conv1_patches``) times the weights in
    one aligned GEMM without bias, written channels-last, then ``bias_gelu_mask_triton``'s one pass
    (CUDA, or CPU under ``TRITON_INTERPRET=1``)."""
    C, mel, frames = chunks.shape
    ch = weight.shape[0]
    if weight.shape != (ch, 1, 3, 3):
        raise ValueError(f"conv1_gelu_mask: weight must be [ch, 1, 3, 3], got {tuple(weight.shape)}")
    _check_vectors("conv1_gelu_mask", ch, bias, valid, C, weight.dtype)
    f1, t1 = conv_len(mel), conv_len(frames)
    w = F.pad(weight.view(ch, 9), (0, 7))  # [ch, 16], as the patches
    y = (conv1_patches(chunks, weight.dtype) @ w.t()).view(C, f1, t1, ch).permute(0, 3, 1, 2)
    return bias_gelu_mask_triton(y, bias, valid)


def bias_gelu_mask_triton(y: torch.Tensor, bias: torch.Tensor, valid: torch.Tensor,
                          flatten: bool = False) -> torch.Tensor:
    """Same contract as ``bias_gelu_mask``, one kernel (CUDA, or CPU under ``TRITON_INTERPRET=1``);
    ``y`` may have any strides (channels-last reads whole rows of channels)."""
    if not triton_available():
        raise ValueError("bias_gelu_mask_triton needs triton")
    C, ch, f, t = y.shape
    _check_vectors("bias_gelu_mask", ch, bias, valid, C, y.dtype)
    if flatten:
        out = torch.empty(C, t, ch * f, dtype=y.dtype, device=y.device)
        so = (t * ch * f, f, 1, ch * f)  # out[c, ti, k * f + fi] as [C, ch, f, t] strides
    else:
        out = torch.empty(C, f, t, ch, dtype=y.dtype, device=y.device)
        so = (f * t * ch, 1, t * ch, ch)  # channels-last
    if C and f and t and ch:
        block_t, block_f, block_ch = _epilogue_tile(f, t, ch)
        t_blocks = triton.cdiv(t, block_t)
        grid = (C * t_blocks, triton.cdiv(ch, block_ch))
        _epilogue_kernel()[grid](y, bias, valid, out, f, t, ch, t_blocks, *y.stride(), *so, valid.stride(0),
                                 BLOCK_T=block_t, BLOCK_F=block_f, BLOCK_CH=block_ch, num_warps=4)
    return out if flatten else out.permute(0, 3, 1, 2)


# ---- the ops ----------------------------------------------------------------------------------------


def conv1_gelu_mask(chunks: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, valid: torch.Tensor,
                    impl: str = "auto") -> torch.Tensor:
    """``GELU(conv2d(x, weight, bias, stride=2, padding=1)) * (t < valid[c])`` of one-channel chunks.

    Args:
        chunks: ``[C, mel, F]`` any float dtype, cast to ``weight``'s first.
        weight: ``[ch, 1, 3, 3]``; bias: ``[ch]`` of weight's dtype.
        valid: ``[C]`` int64 time steps to keep after the convolution (``conv_valid[:, 0]``).
        impl: ``auto`` (the fused path on CUDA when Triton imports), ``triton`` or ``torch``.

    Returns:
        ``[C, ch, f1, t1]`` in weight's dtype, channels-last memory (physically ``[C, f1, t1, ch]``).
    """
    if use_triton(impl, chunks, "conv1_gelu_mask"):
        return conv1_gelu_mask_triton(chunks, weight, bias, valid)
    return conv1_gelu_mask_torch(chunks, weight, bias, valid)


def bias_gelu_mask(y: torch.Tensor, bias: torch.Tensor, valid: torch.Tensor, flatten: bool = False,
                   impl: str = "auto") -> torch.Tensor:
    """``GELU(y + bias[ch]) * (t < valid[c])`` of a convolution's output computed without bias.

    Args:
        y: ``[C, ch, f, t]`` (channels-last memory is what it reads best).
        bias: ``[ch]`` of y's dtype.
        valid: ``[C]`` int64 time steps to keep.
        flatten: return ``[C, t, ch * f]`` (feature ``channel * f + frequency``), as
            ``permute(0, 3, 1, 2).reshape(C, t, ch * f)`` of the 4-d result.
        impl: ``auto``, ``triton`` or ``torch`` (``bias_gelu_mask_torch``).

    Returns:
        ``[C, ch, f, t]`` channels-last, or ``[C, t, ch * f]`` contiguous.
    """
    if use_triton(impl, y, "bias_gelu_mask"):
        return bias_gelu_mask_triton(y, bias, valid, flatten)
    return bias_gelu_mask_torch(y, bias, valid, flatten)


def conv_gelu_mask(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, valid: torch.Tensor,
                   flatten: bool = False, impl: str = "auto") -> torch.Tensor:
    """A later convolution with its epilogue: ``GELU(conv2d(x, weight, bias, 2, 1)) * (t < valid[c])``.

    ``torch``: the convolution with its bias, then ``gelu_mask`` (the reference). ``triton``: the
    convolution without bias (cuDNN), then ``bias_gelu_mask``'s one pass. Arguments as
    ``bias_gelu_mask``'s; ``x [C, ch_in, f_in, t_in]``, ``weight [ch, ch_in, 3, 3]``.
    """
    if use_triton(impl, x, "conv_gelu_mask"):
        return bias_gelu_mask_triton(F.conv2d(x, weight, None, 2, 1), bias, valid, flatten)
    return gelu_mask(F.conv2d(x, weight, bias, 2, 1), valid, flatten)


def audio_front(chunks: torch.Tensor, convs: Sequence[tuple[torch.Tensor, torch.Tensor]],
                conv_valid: torch.Tensor, impl: str = "auto") -> torch.Tensor:
    """The whole front-end: ``chunks [C, mel, F]`` -> ``[C, t3, ch * f3]``.

    Args:
        convs: the three convolutions' ``(weight, bias)``, weights in the activation dtype (the
            second and third channels-last, as cuDNN reads them without a conversion).
        conv_valid: ``[C, 3]`` int64 valid time steps after each convolution.
        impl: ``auto``, ``triton`` or ``torch`` for all three (see the module docstring).
    """
    (w1, b1), (w2, b2), (w3, b3) = convs
    x = conv1_gelu_mask(chunks, w1, b1, conv_valid[:, 0], impl)  # [C, ch, f1, t1]
    x = conv_gelu_mask(x, w2, b2, conv_valid[:, 1], impl=impl)  # [C, ch, f2, t2]
    return conv_gelu_mask(x, w3, b3, conv_valid[:, 2], flatten=True, impl=impl)  # [C, t3, ch * f3]
