"""A transformer block's second half (after attention) written two ways, for the fused-op tests:
the encoders' unfused code (``block_out``: ``x + F.linear``, ``F.layer_norm``, ``F.gelu`` as separate
passes) and the same math from ``encoders.ops``, which is how the encoders call the ops."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from omnienc.encoders.ops import add_layernorm, linear_gelu


def block_params(hidden: int, mlp: int, dtype, device="cpu", eps: float = 1e-6):
    """(out_w, out_b, norm2, fc1_w, fc1_b, fc2_w, fc2_b), norms as (weight, bias, eps); random,
    matrices ~ N(0, 1/fan_in), vectors around their usual values."""
    def r(*shape, s=1.0, mean=0.0):
        return (torch.randn(*shape, device=device) * s + mean).to(dtype)

    norm2 = (r(hidden, s=0.3, mean=1.0), r(hidden, s=0.3), eps)
    return (r(hidden, hidden, s=hidden**-0.5), r(hidden, s=0.3), norm2,
            r(mlp, hidden, s=hidden**-0.5), r(mlp, s=0.3), r(hidden, mlp, s=mlp**-0.5), r(hidden, s=0.3))


def unfused_block_out(x, o, p, next_norm, approximate: str, clamp=None):
    """``x += o @ Wout^T + b; h = LN2(x); x += fc2(gelu(fc1(h))); clamp; next_norm(x)``."""
    out_w, out_b, norm2, fc1_w, fc1_b, fc2_w, fc2_b = p
    x = x + F.linear(o.flatten(1), out_w, out_b)
    h = F.layer_norm(x, (x.shape[-1],), *norm2)
    x = x + F.linear(F.gelu(F.linear(h, fc1_w, fc1_b), approximate=approximate), fc2_w, fc2_b)
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x, F.layer_norm(x, (x.shape[-1],), *next_norm)


def fused_block_out(x, o, p, next_norm, approximate: str, clamp=None, impl="auto", gelu_impl="torch"):
    """The same with ``add_layernorm`` twice (the biases stay in the GEMMs) and ``linear_gelu``."""
    out_w, out_b, norm2, fc1_w, fc1_b, fc2_w, fc2_b = p
    x, h = add_layernorm(x, F.linear(o.flatten(1), out_w, out_b), None, *norm2, impl=impl)
    m = linear_gelu(h, fc1_w, fc1_b, approximate, impl=gelu_impl)
    return add_layernorm(x, F.linear(m, fc2_w, fc2_b), None, *next_norm, clamp=clamp, impl=impl)


def exact_block_out(x, o, p, next_norm, approximate: str, clamp=None):
    """The unfused math in float64 on the same (rounded) inputs."""
    d = [t.double() if isinstance(t, torch.Tensor) else t for t in (*p[:2], *p[3:])]
    norm2 = tuple(t.double() if isinstance(t, torch.Tensor) else t for t in p[2])
    nxt = tuple(t.double() if isinstance(t, torch.Tensor) else t for t in next_norm)
    return unfused_block_out(x.double(), o.double(), (*d[:2], norm2, *d[2:]), nxt, approximate, clamp)
