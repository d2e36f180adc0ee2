"""Fused layers of the encoders' blocks, one op per file, each a Triton kernel with its PyTorch
reference beside it (the reference is what the CPU and float32 paths run).

    ``add_layernorm``  residual add (+ bias, + optional clamp) and LayerNorm in one pass
    ``linear_gelu``    fc1 + bias + GELU (tanh or exact) three ways: torch, cuBLASLt epilogue, Triton
    ``bias_gelu``      the elementwise part alone: ``F.gelu(y + b)``
"""

from ._triton import triton_available
from .add_layernorm import add_layernorm, add_layernorm_torch, add_layernorm_triton
from .linear_gelu import bias_gelu, bias_gelu_torch, bias_gelu_triton, linear_gelu

__all__ = [
    "add_layernorm",
    "add_layernorm_torch",
    "add_layernorm_triton",
    "bias_gelu",
    "bias_gelu_torch",
    "bias_gelu_triton",
    "linear_gelu",
    "triton_available",
]
