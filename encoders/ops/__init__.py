"""Fused layers of the encoders, one op per file, each a Triton kernel with its PyTorch
reference beside it (the reference is what the CPU and float32 paths run).

    ``add_layernorm``  residual add (+ bias, + optional clamp) and LayerNorm in one pass
    ``linear_gelu``    fc1 + bias + GELU (tanh or exact) three ways: torch, cuBLASLt epilogue, Triton
    ``bias_gelu``      the elementwise part alone: ``F.gelu(y + b)``
    ``audio_front``    the audio conv front-end's epilogues: ``conv1_gelu_mask`` (conv1 as one
                       aligned GEMM over its patches, then bias + exact GELU + time mask in one pass)
                       and ``bias_gelu_mask`` (bias + GELU + mask after conv2 and conv3, the last one
                       also flattening to ``[C, t, ch * f]``)
    ``row_flags``      per output row, whether every value of every output is finite (the
                       runtime's check of each run), one pass over one or several tensors
"""

from ._triton import triton_available
from .add_layernorm import add_layernorm, add_layernorm_torch, add_layernorm_triton
from .audio_front import (
    audio_front,
    bias_gelu_mask,
    bias_gelu_mask_torch,
    bias_gelu_mask_triton,
    conv1_gelu_mask,
    conv1_gelu_mask_torch,
    conv1_gelu_mask_triton,
    conv_gelu_mask,
    gelu_mask,
)
from .finite import row_flags, row_flags_torch, row_flags_triton
from .linear_gelu import bias_gelu, bias_gelu_torch, bias_gelu_triton, linear_gelu

__all__ = [
    "add_layernorm",
    "add_layernorm_torch",
    "add_layernorm_triton",
    "audio_front",
    "bias_gelu",
    "bias_gelu_mask",
    "bias_gelu_mask_torch",
    "bias_gelu_mask_triton",
    "bias_gelu_torch",
    "bias_gelu_triton",
    "conv1_gelu_mask",
    "conv1_gelu_mask_torch",
    "conv1_gelu_mask_triton",
    "conv_gelu_mask",
    "gelu_mask",
    "linear_gelu",
    "row_flags",
    "row_flags_torch",
    "row_flags_triton",
    "triton_available",
]
