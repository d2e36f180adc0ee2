"""The pre-norm transformer block both encoders share, as two pure functions around attention.

Per block, with ``h`` the block's normalized input (its LN1 of ``x``, computed by the step before)::

    qkv = h @ Wqkv^T + b_qkv             block_qkv        -> q, k, v (vision rotates q and k)
    o   = attention(q, k, v)             the caller       (packed varlen; the capture/compile boundary)
    x   = x + o @ Wout^T + b_out         block_out
    h   = LN2(x)
    x   = x + fc2(act(fc1(h)))
    h   = next_norm(x)                   the next block's LN1, or the encoder's final norm

Carrying ``(x, h)`` across blocks puts every residual add right before a LayerNorm, so the two are
one fused pass (``ops.add_layernorm``), and fc1 + GELU can be one GEMM with a GELU epilogue
(``ops.linear_gelu``). The weights travel as one ``BlockWeights`` (a NamedTuple of the block's
tensors), so ``torch.compile`` traces each function once for all blocks.
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from .ops import add_layernorm, linear_gelu

# Activations by config name, written out so torch.compile sees plain functions.
ACTIVATIONS = {
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu": F.gelu,
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "silu": F.silu,
}


def activation(name: str):
    if name in ACTIVATIONS:
        return ACTIVATIONS[name]
    from transformers.activations import ACT2FN  # only for names not written out above (~1 s to import)

    return ACT2FN[name]


class Norm(NamedTuple):
    """A LayerNorm's tensors and epsilon."""

    weight: torch.Tensor
    bias: torch.Tensor
    eps: float

    @classmethod
    def of(cls, ln: nn.LayerNorm) -> Norm:
        return cls(ln.weight, ln.bias, ln.eps)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)


class BlockWeights(NamedTuple):
    """One block's tensors (``[out, in]`` Linear weights), gathered from its modules."""

    qkv_w: torch.Tensor  # [3 * hidden, hidden]
    qkv_b: torch.Tensor
    out_w: torch.Tensor  # [hidden, hidden]
    out_b: torch.Tensor
    norm2: Norm
    fc1_w: torch.Tensor  # [ffn, hidden]
    fc1_b: torch.Tensor
    fc2_w: torch.Tensor  # [hidden, ffn]
    fc2_b: torch.Tensor


def block_qkv(w: BlockWeights, h: torch.Tensor) -> torch.Tensor:
    """``h [T, hidden]`` -> the stacked projection ``[T, 3 * hidden]`` (q, k, v in that order)."""
    return F.linear(h, w.qkv_w, w.qkv_b)


# GELU flavours the fused ops take, by config name.
_APPROXIMATE = {"gelu_pytorch_tanh": "tanh", "gelu": "none"}


class Fusion(NamedTuple):
    """Which fused ops the encoders run (each field an op's ``impl``; ``torch`` = the unfused
    reference): ``norm`` for residual add + LayerNorm (``ops.add_layernorm``: ``auto``, ``triton``
    or ``torch``), ``gelu`` for fc1 + GELU (``ops.linear_gelu``: ``torch``, ``epilogue`` or
    ``triton``; ``auto`` = the cuBLASLt epilogue for tanh-GELU on CUDA, else torch) and ``front``
    for the audio conv front-end (``ops.audio_front``: ``auto``, ``triton`` or ``torch``; the vision
    encoder has none). A 2-tuple ``(norm, gelu)`` leaves ``front`` at ``auto``."""

    norm: str = "auto"
    gelu: str = "auto"
    front: str = "auto"

    def resolve(self, x: torch.Tensor, act: str) -> Fusion:
        gelu = self.gelu
        if gelu == "auto":
            gelu = "epilogue" if x.is_cuda and _APPROXIMATE.get(act) == "tanh" else "torch"
        return self._replace(gelu=gelu)

    @property
    def fused_blocks(self) -> bool:
        """Whether ``block_out`` calls the ops (else it runs its own unfused code)."""
        return (self.norm, self.gelu) != ("torch", "torch")


UNFUSED = Fusion("torch", "torch", "torch")


def block_out(w: BlockWeights, x: torch.Tensor, o: torch.Tensor, next_norm: Norm, act: str,
              clamp: float | None = None, fusion: Fusion = UNFUSED) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention output ``o [T, H, D]`` back into the residual ``x [T, hidden]``, then the MLP.

    ``clamp``: bound the residual after the MLP (the audio encoder in float16, as its reference does).
    ``fusion``: a resolved ``Fusion`` (``UNFUSED``: separate passes, the reference).
    Returns the new residual and ``next_norm`` of it.
    """
    if fusion.fused_blocks and act in _APPROXIMATE:
        x, h = add_layernorm(x, F.linear(o.flatten(1), w.out_w, w.out_b), None, *w.norm2, impl=fusion.norm)
        m = linear_gelu(h, w.fc1_w, w.fc1_b, _APPROXIMATE[act], impl=fusion.gelu)
        del h  # each temporary is freed once read: a long call's peak memory is this MLP's
        y = F.linear(m, w.fc2_w, w.fc2_b)
        del m
        return add_layernorm(x, y, None, *next_norm, clamp=clamp, impl=fusion.norm)
    x = x + F.linear(o.flatten(1), w.out_w, w.out_b)
    h = w.norm2(x)
    x = x + F.linear(activation(act)(F.linear(h, w.fc1_w, w.fc1_b)), w.fc2_w, w.fc2_b)
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x, next_norm(x)


def with_options(module: nn.Module, options: dict, allowed: tuple[str, ...]):
    """A shallow copy of an encoder with other constructor options, sharing its weights (A/B runs)."""
    unknown = set(options) - set(allowed)
    if unknown:
        raise ValueError(f"unknown {type(module).__name__} option(s) {sorted(unknown)}; allowed: {list(allowed)}")
    if "fusion" in options:
        options = {**options, "fusion": Fusion(*options["fusion"])}
    other = copy.copy(module)
    other.__dict__.update(options)
    return other


__all__ = ["ACTIVATIONS", "UNFUSED", "BlockWeights", "Fusion", "Norm", "activation", "block_out", "block_qkv", "with_options"]
