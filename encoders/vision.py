"""Qwen3-Omni vision encoder: ViT + 2x2 spatial merge + DeepStack features.

Numerically follows transformers' ``Qwen3OmniMoeVisionEncoder``; submodule names mirror its
``state_dict()`` keys, except that the Conv3d patch embedding is a Linear over flattened patches
(its kernel equals its stride; ``weights.load_hf_weights`` reshapes the Conv3d weight).

The work is split in two:
    ``plan_vision`` (host): everything that depends on the request mix -- position-embedding taps,
        rotary positions, attention segments -- optionally padded to a fixed token count and a fixed
        number of segments (what a CUDA-graph bucket needs).
    ``VisionEncoder.run`` (device): the forward over a plan; no host syncs, no data-dependent shapes.

Shapes: T patch tokens (4 per output token), hidden 1152, head_dim 72 for the released checkpoint;
every size is read from the transformers config.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN

from .attention import varlen_attention
from .rotary import rotary_qkv_torch, rotary_qkv_triton, use_triton

# Padding tokens are split into attention segments of at most this many tokens, so a mostly empty
# bucket costs little attention work.
PAD_SEGMENT_TOKENS = 256


@dataclass
class VisionPlan:
    """Host-computed layout of one vision batch (T tokens, S segments, padding included).

    Attributes:
        pos_index: ``[T, 4]`` int64 taps into the learned position table (bilinear).
        pos_weight: ``[T, 4]`` float32 tap weights (0 for padding tokens).
        rope_pos: ``[T, 2]`` float32 (row, col) of each patch in its frame.
        cu_seqlens: ``[S + 1]`` int32 attention segment boundaries (one per frame, then padding).
        seqlens: the S segment lengths, on the host.
        max_seqlen: an upper bound on the longest segment.
        num_real: real (non-padding) tokens; they come first.
    """

    pos_index: torch.Tensor
    pos_weight: torch.Tensor
    rope_pos: torch.Tensor
    cu_seqlens: torch.Tensor
    seqlens: tuple[int, ...]
    max_seqlen: int
    num_real: int

    TENSORS = ("pos_index", "pos_weight", "rope_pos", "cu_seqlens")

    @property
    def num_tokens(self) -> int:
        return self.pos_index.shape[0]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> VisionPlan:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in self.TENSORS:
            moved[name] = moved[name].to(device, non_blocking=non_blocking)
        return VisionPlan(**moved)


@functools.lru_cache(maxsize=4096)
def _frame_layout(h: int, w: int, merge: int, side: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Taps, weights and (row, col) of one h x w frame, patches in merge-window order.

    Order: merged-block row, merged-block column, then the merge x merge block row-major.
    Bilinear resampling of the side x side table with align_corners=True, in float32.
    """
    blocks_w = w // merge
    k = torch.arange(h * w)
    in_col, in_row = k % merge, (k // merge) % merge
    block_col, block_row = (k // (merge * merge)) % blocks_w, k // (merge * merge * blocks_w)
    row, col = block_row * merge + in_row, block_col * merge + in_col

    def axis(index: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        src = index.to(torch.float32) * (side - 1) / max(size - 1, 1)
        floor = torch.floor(src)
        offsets = torch.arange(2)
        taps = (floor.long()[:, None] + offsets).clamp(0, side - 1)
        weights = (1 - (src[:, None] - floor[:, None] - offsets).abs()).clamp(min=0)
        return taps, weights

    row_taps, row_w = axis(row, h)
    col_taps, col_w = axis(col, w)
    index = (row_taps[:, :, None] * side + col_taps[:, None, :]).reshape(-1, 4)
    weight = (row_w[:, :, None] * col_w[:, None, :]).reshape(-1, 4)
    rope_pos = torch.stack([row, col], dim=-1).to(torch.float32)
    return index, weight, rope_pos


def plan_vision(
    grid_thw: Sequence[Sequence[int]],
    spatial_merge_size: int,
    num_position_embeddings: int,
    num_tokens: int | None = None,
    num_segments: int | None = None,
) -> VisionPlan:
    """Builds the host-side plan for items with grids ``(t, h, w)`` (in patches).

    Args:
        grid_thw: one ``(t, h, w)`` per image or video, in input order.
        spatial_merge_size: the merge window side (2).
        num_position_embeddings: size of the learned square position table (2304 = 48 x 48).
        num_tokens: pad to this many tokens (a bucket's size); default: no padding.
        num_segments: pad ``cu_seqlens`` to this many segments with zero-length ones; default: as
            many as needed.

    Returns:
        A CPU ``VisionPlan``. Padding tokens follow the real ones and form their own segments.
    """
    side = int(num_position_embeddings**0.5)
    index, weight, rope, seqlens = [], [], [], []
    for t, h, w in grid_thw:
        idx, wt, pos = _frame_layout(int(h), int(w), spatial_merge_size, side)
        index += [idx] * t
        weight += [wt] * t
        rope += [pos] * t
        seqlens += [h * w] * t
    num_real = sum(seqlens)
    total = num_real if num_tokens is None else num_tokens
    if total < num_real:
        raise ValueError(f"plan needs {num_real} tokens but only {total} were allowed")
    pad = total - num_real
    if pad:
        index.append(torch.zeros(pad, 4, dtype=torch.int64))
        weight.append(torch.zeros(pad, 4, dtype=torch.float32))
        rope.append(torch.zeros(pad, 2, dtype=torch.float32))
        seqlens += [PAD_SEGMENT_TOKENS] * (pad // PAD_SEGMENT_TOKENS)
        if pad % PAD_SEGMENT_TOKENS:
            seqlens.append(pad % PAD_SEGMENT_TOKENS)
    if num_segments is not None:
        if len(seqlens) > num_segments:
            raise ValueError(f"plan needs {len(seqlens)} attention segments but only {num_segments} were allowed")
        seqlens += [0] * (num_segments - len(seqlens))
    cu = torch.zeros(len(seqlens) + 1, dtype=torch.int32)
    cu[1:] = torch.tensor(seqlens, dtype=torch.int64).cumsum(0)
    empty4 = torch.zeros(0, 4)
    return VisionPlan(
        pos_index=torch.cat(index) if index else empty4.long(),
        pos_weight=torch.cat(weight) if weight else empty4,
        rope_pos=torch.cat(rope) if rope else torch.zeros(0, 2),
        cu_seqlens=cu,
        seqlens=tuple(seqlens),
        max_seqlen=max(seqlens, default=0),
        num_real=num_real,
    )


class PatchEmbed(nn.Module):
    """The Conv3d patch embedding as a Linear over flattened ``[C, T, P, P]`` patches."""

    def __init__(self, in_features: int, hidden: int):
        super().__init__()
        self.proj = nn.Linear(in_features, hidden, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.to(self.proj.weight.dtype))


# Activations by config name; written out so torch.compile sees plain functions.
ACTIVATIONS = {
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu": F.gelu,
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "silu": F.silu,
}


def activation(name: str):
    return ACTIVATIONS.get(name) or ACT2FN[name]


def attn_in(x, ln_w, ln_b, qkv_w, qkv_b, cos, sin, num_heads: int, eps: float):
    """LN1 -> qkv -> 2-D rotary (float32, as the reference). ``x [T, hidden]`` -> q, k, v ``[T, H, D]``.

    ``cos``/``sin`` are ``[T, D/2]`` float32. Plain PyTorch (what ``compile_blocks`` compiles).
    """
    h = F.layer_norm(x, (x.shape[-1],), ln_w, ln_b, eps)
    return rotary_qkv_torch(F.linear(h, qkv_w, qkv_b), cos, sin, num_heads)


def attn_in_fused_rotary(x, ln_w, ln_b, qkv_w, qkv_b, cos, sin, num_heads: int, eps: float):
    """``attn_in`` with the rotary as one Triton kernel (CUDA; see ``encoders.rotary``)."""
    h = F.layer_norm(x, (x.shape[-1],), ln_w, ln_b, eps)
    return rotary_qkv_triton(F.linear(h, qkv_w, qkv_b), cos, sin, num_heads)


def attn_out_mlp(x, attn, proj_w, proj_b, ln_w, ln_b, fc1_w, fc1_b, fc2_w, fc2_b, eps: float, act: str):
    """x += proj(attn); x += fc2(act(fc1(LN2(x)))). ``attn [T, H, D]`` -> ``[T, hidden]``."""
    x = x + F.linear(attn.reshape(x.shape[0], -1), proj_w, proj_b)
    h = F.layer_norm(x, (x.shape[-1],), ln_w, ln_b, eps)
    return x + F.linear(activation(act)(F.linear(h, fc1_w, fc1_b)), fc2_w, fc2_b)


class VisionAttention(nn.Module):
    """Parameter holder (``qkv``, ``proj``); the math is ``attn_in`` / ``attn_out_mlp``."""

    def __init__(self, hidden: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(hidden, 3 * hidden, bias=True)
        self.proj = nn.Linear(hidden, hidden, bias=True)


class VisionMLP(nn.Module):
    """Parameter holder (``linear_fc1``, ``linear_fc2``)."""

    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.linear_fc1 = nn.Linear(hidden, intermediate, bias=True)
        self.linear_fc2 = nn.Linear(intermediate, hidden, bias=True)


class VisionBlock(nn.Module):
    """Pre-norm transformer block: x += attn(LN1(x)); x += mlp(LN2(x)).

    The forward is split around attention into two pure functions over the block's tensors, so the
    encoder can swap in compiled versions of them (``VisionEncoder.compile_blocks``) for every block at once.
    """

    def __init__(self, cfg):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.hidden_size, eps=1e-6)
        self.norm2 = nn.LayerNorm(cfg.hidden_size, eps=1e-6)
        self.attn = VisionAttention(cfg.hidden_size, cfg.num_heads)
        self.mlp = VisionMLP(cfg.hidden_size, cfg.intermediate_size)
        self.act = cfg.hidden_act

    def forward(self, x, cos, sin, plan: VisionPlan, backend: str, fns=(attn_in, attn_out_mlp)) -> torch.Tensor:
        pre, post = fns
        q, k, v = pre(x, self.norm1.weight, self.norm1.bias, self.attn.qkv.weight, self.attn.qkv.bias,
                      cos, sin, self.attn.num_heads, self.norm1.eps)
        o = varlen_attention(q, k, v, plan.cu_seqlens, plan.max_seqlen, plan.seqlens, backend)
        return post(x, o, self.attn.proj.weight, self.attn.proj.bias, self.norm2.weight, self.norm2.bias,
                    self.mlp.linear_fc1.weight, self.mlp.linear_fc1.bias, self.mlp.linear_fc2.weight,
                    self.mlp.linear_fc2.bias, self.norm2.eps, self.act)


class PatchMerger(nn.Module):
    """Merges each 2x2 window (4 consecutive tokens) into one output token.

    ``postshuffle_norm``: LayerNorm over the 4 concatenated tokens (DeepStack mergers); otherwise
    LayerNorm per token before concatenation (the final merger).
    """

    def __init__(self, hidden: int, unit: int, out_hidden: int, postshuffle_norm: bool):
        super().__init__()
        self.merged = hidden * unit
        self.postshuffle_norm = postshuffle_norm
        self.ln_q = nn.LayerNorm(self.merged if postshuffle_norm else hidden, eps=1e-6)
        self.mlp = nn.ModuleList([nn.Linear(self.merged, self.merged), nn.GELU(), nn.Linear(self.merged, out_hidden)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ln_q(x.view(-1, self.merged)) if self.postshuffle_norm else self.ln_q(x).view(-1, self.merged)
        for layer in self.mlp:
            x = layer(x)
        return x


class VisionEncoder(nn.Module):
    """Native Qwen3-Omni vision encoder.

    Args:
        config: transformers' ``Qwen3OmniMoeVisionEncoderConfig``.
        attn_backend: see ``encoders.attention``.
    """

    def __init__(self, config, attn_backend: str = "auto", rotary_backend: str = "auto"):
        super().__init__()
        self.config = config
        self.attn_backend = attn_backend
        self.rotary_backend = rotary_backend
        c = config
        self.merge = c.spatial_merge_size
        self.unit = c.spatial_merge_size**2
        self.head_dim = c.hidden_size // c.num_heads
        if self.head_dim % 4:
            raise ValueError(f"head_dim {self.head_dim} must be divisible by 4 for the 2-D rotary embedding")
        self.in_features = c.in_channels * c.temporal_patch_size * c.patch_size * c.patch_size
        self.deepstack_visual_indexes = list(c.deepstack_visual_indexes)
        self.patch_embed = PatchEmbed(self.in_features, c.hidden_size)
        self.pos_embed = nn.Embedding(c.num_position_embeddings, c.hidden_size)
        self.blocks = nn.ModuleList([VisionBlock(c) for _ in range(c.depth)])
        self.merger = PatchMerger(c.hidden_size, self.unit, c.out_hidden_size, postshuffle_norm=False)
        self.merger_list = nn.ModuleList(
            [PatchMerger(c.hidden_size, self.unit, c.out_hidden_size, True) for _ in self.deepstack_visual_indexes]
        )
        rope = getattr(c, "rope_parameters", None) or {}
        self.rope_theta = float(rope.get("rope_theta", 10000.0))
        self._inv_freq: dict[torch.device, torch.Tensor] = {}
        self.block_fns = (attn_in, attn_out_mlp)

    def compile_blocks(self, **kwargs) -> VisionEncoder:
        """Compiles the per-block math around attention (one dynamic-shape graph shared by all blocks).

        Fuses LayerNorm, rotary, bias, GELU and residual work; attention stays as is. The result is
        still captured by the runtime's CUDA graphs. kwargs go to ``torch.compile``.
        """
        kwargs.setdefault("dynamic", True)
        self.block_fns = tuple(torch.compile(f, **kwargs) for f in (attn_in, attn_out_mlp))
        return self

    @property
    def dtype(self) -> torch.dtype:
        return self.patch_embed.proj.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.patch_embed.proj.weight.device

    def plan(self, grid_thw, num_tokens: int | None = None, num_segments: int | None = None) -> VisionPlan:
        """Host-side plan for ``grid_thw`` (a ``[n, 3]`` tensor or a list of triples); CPU tensors."""
        if isinstance(grid_thw, torch.Tensor):
            grid_thw = grid_thw.tolist()
        return plan_vision(grid_thw, self.merge, self.config.num_position_embeddings, num_tokens, num_segments)

    def inv_freq(self, device: torch.device) -> torch.Tensor:
        """Rotary inverse frequencies ``[head_dim / 4]``, float32, cached per device (never cast)."""
        if device not in self._inv_freq:
            dim = self.head_dim // 2
            exps = torch.arange(0, dim, 2, dtype=torch.float32) / dim
            self._inv_freq[device] = (1.0 / (self.rope_theta**exps)).to(device)
        return self._inv_freq[device]

    def run(self, pixel_values: torch.Tensor, plan: VisionPlan) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Device forward over a plan whose tensors are on this module's device.

        Args:
            pixel_values: ``[T, C*Tp*P*P]`` flattened patches (T == plan.num_tokens).

        Returns:
            embeds ``[T/4, out_hidden]`` and one ``[T/4, out_hidden]`` tensor per DeepStack index.
        """
        x = self.patch_embed(pixel_values)  # [T, hidden]
        # Bilinear taps of the learned table, summed in float32.
        pos = (self.pos_embed.weight[plan.pos_index].float() * plan.pos_weight[..., None]).sum(1)
        x = x + pos.to(x.dtype)
        freqs = (plan.rope_pos[:, :, None] * self.inv_freq(x.device)).flatten(1)  # [T, head_dim/2]
        cos, sin = freqs.cos(), freqs.sin()
        fns = self.block_fns
        if fns[0] is attn_in and use_triton(self.rotary_backend, x):
            fns = (attn_in_fused_rotary, fns[1])
        deepstack = []
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin, plan, self.attn_backend, fns)
            if i in self.deepstack_visual_indexes:
                deepstack.append(self.merger_list[self.deepstack_visual_indexes.index(i)](x))
        return self.merger(x), deepstack

    def forward(self, pixel_values: torch.Tensor, grid_thw) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """HF-shaped call: ``pixel_values [N, C*Tp*P*P]``, ``grid_thw [n, 3]`` -> (embeds, deepstack)."""
        plan = self.plan(grid_thw).to(pixel_values.device)
        return self.run(pixel_values, plan)

    @classmethod
    def from_pretrained(cls, checkpoint_dir, dtype=torch.bfloat16, device="cpu", attn_backend="auto") -> VisionEncoder:
        """Builds from ``thinker_config.vision_config`` and loads ``thinker.visual.*`` weights.

        Raises:
            CheckpointError: a malformed ``config.json`` or index, or a config without a field that
                changes the computation (``weights.REQUIRED_CONFIG_FIELDS``); names the file and field.
            WeightLoadError: missing, unexpected, non-float, mis-shaped or non-finite weights.
        """
        from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import Qwen3OmniMoeVisionEncoderConfig

        from .weights import load_hf_weights, read_encoder_config

        config = read_encoder_config(checkpoint_dir, "vision_config", Qwen3OmniMoeVisionEncoderConfig)
        with torch.device(device):
            model = cls(config, attn_backend=attn_backend).to(dtype)
        load_hf_weights(model, checkpoint_dir, prefix="thinker.visual.")
        return model.eval()


__all__ = ["VisionEncoder", "VisionPlan", "plan_vision", "PAD_SEGMENT_TOKENS"]
