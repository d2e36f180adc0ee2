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
from torch import nn

from .attention import varlen_attention
from .block import UNFUSED, BlockWeights, Fusion, Norm, block_out, block_qkv, with_options
from .rotary import rotary_qkv_torch, rotary_qkv_triton, use_triton

# Default: padding tokens are split into attention segments of at most this many tokens, so a mostly
# empty bucket costs little attention work (VisionEncoder's pad_segment_tokens).
PAD_SEGMENT_TOKENS = 256
# Position embeddings are summed over their four bilinear taps in float32, a [tokens, 4, hidden]
# temporary: done in blocks of this many tokens, it stays small for any request, where a whole long
# video's would be its forward's peak memory (docs/BENCHMARKS.md). Calls this small run in one block.
POS_EMBED_BLOCK = 4096


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


# Frame shapes whose layouts stay cached: a shape not among them is laid out on the host again, which
# the GPU may wait for (the simulator prices that first sighting with runtime.sightings' mirror of it).
FRAME_LAYOUT_CACHE = 4096


@functools.lru_cache(maxsize=FRAME_LAYOUT_CACHE)
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


def forget_frame_layouts() -> None:
    """Empties the cache of frame layouts: every shape is then laid out anew, as in a new process."""
    _frame_layout.cache_clear()


def frame_layouts_made() -> int:
    """How many frame layouts were computed (cache misses) since the process started or the last
    ``forget_frame_layouts``."""
    return _frame_layout.cache_info().misses


def plan_vision(
    grid_thw: Sequence[Sequence[int]],
    spatial_merge_size: int,
    num_position_embeddings: int,
    num_tokens: int | None = None,
    num_segments: int | None = None,
    pad_segment_tokens: int = PAD_SEGMENT_TOKENS,
) -> VisionPlan:
    """Builds the host-side plan for items with grids ``(t, h, w)`` (in patches).

    Args:
        grid_thw: one ``(t, h, w)`` per image or video, in input order.
        spatial_merge_size: the merge window side (2).
        num_position_embeddings: size of the learned square position table (2304 = 48 x 48).
        num_tokens: pad to this many tokens (a bucket's size); default: no padding.
        num_segments: pad ``cu_seqlens`` to this many segments with zero-length ones; default: as
            many as needed.
        pad_segment_tokens: padding tokens form segments of at most this many tokens.

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
        seqlens += [pad_segment_tokens] * (pad // pad_segment_tokens)
        if pad % pad_segment_tokens:
            seqlens.append(pad % pad_segment_tokens)
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


class VisionAttention(nn.Module):
    """``qkv`` and ``proj`` (the math is in ``encoders.block``)."""

    def __init__(self, hidden: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(hidden, 3 * hidden, bias=True)
        self.proj = nn.Linear(hidden, hidden, bias=True)


class VisionMLP(nn.Module):
    """``linear_fc1`` and ``linear_fc2``."""

    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.linear_fc1 = nn.Linear(hidden, intermediate, bias=True)
        self.linear_fc2 = nn.Linear(intermediate, hidden, bias=True)


class VisionBlock(nn.Module):
    """Pre-norm block: x += attn(LN1(x)); x += mlp(LN2(x)), with a 2-D rotary on q and k."""

    def __init__(self, cfg):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.hidden_size, eps=1e-6)
        self.norm2 = nn.LayerNorm(cfg.hidden_size, eps=1e-6)
        self.attn = VisionAttention(cfg.hidden_size, cfg.num_heads)
        self.mlp = VisionMLP(cfg.hidden_size, cfg.intermediate_size)

    def weights(self) -> BlockWeights:
        a, m = self.attn, self.mlp
        return BlockWeights(a.qkv.weight, a.qkv.bias, a.proj.weight, a.proj.bias, Norm.of(self.norm2),
                            m.linear_fc1.weight, m.linear_fc1.bias, m.linear_fc2.weight, m.linear_fc2.bias)


def attn_in(w: BlockWeights, h, cos, sin, num_heads: int, rotary=rotary_qkv_torch):
    """LN1(x) -> q, k, v ``[T, H, D]`` with the 2-D rotary on q and k (``cos``/``sin`` ``[T, D/2]`` float32)."""
    return rotary(block_qkv(w, h), cos, sin, num_heads)


class PatchMerger(nn.Module):
    """Merges each 2x2 window (4 consecutive tokens) into one output token.

    ``postshuffle_norm``: LayerNorm over the 4 concatenated tokens (DeepStack mergers); otherwise
    LayerNorm per token before concatenation (the final merger, whose norm the last block applies:
    see ``project``).
    """

    def __init__(self, hidden: int, unit: int, out_hidden: int, postshuffle_norm: bool):
        super().__init__()
        self.merged = hidden * unit
        self.postshuffle_norm = postshuffle_norm
        self.ln_q = nn.LayerNorm(self.merged if postshuffle_norm else hidden, eps=1e-6)
        self.mlp = nn.ModuleList([nn.Linear(self.merged, self.merged), nn.GELU(), nn.Linear(self.merged, out_hidden)])

    def project(self, h: torch.Tensor) -> torch.Tensor:
        """The MLP over already normalized tokens ``h [T, hidden]`` (per-token norm) -> ``[T/4, out]``."""
        x = h.view(-1, self.merged)
        for layer in self.mlp:
            x = layer(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.postshuffle_norm:
            return self.project(self.ln_q(x.view(-1, self.merged)))
        return self.project(self.ln_q(x))


class VisionEncoder(nn.Module):
    """Native Qwen3-Omni vision encoder.

    Args:
        config: transformers' ``Qwen3OmniMoeVisionEncoderConfig``.
        attn_backend: default attention backend of ``run`` (see ``encoders.attention``).
        rotary_backend: ``auto`` (Triton on CUDA when importable), ``triton`` or ``torch``.
        pad_segment_tokens: padding tokens of a padded plan are cut into attention segments of at
            most this many tokens (a mostly empty bucket then costs little attention work).
        fusion: how each block fuses residual adds, LayerNorms and GELU (``block.Fusion``);
            ``block.UNFUSED`` runs the separate passes of the reference.
    """

    OPTIONS = ("attn_backend", "rotary_backend", "pad_segment_tokens", "fusion")

    def __init__(self, config, attn_backend: str = "auto", rotary_backend: str = "auto",
                 pad_segment_tokens: int = PAD_SEGMENT_TOKENS, fusion: Fusion = Fusion()):
        super().__init__()
        self.config = config
        self.attn_backend = attn_backend
        self.rotary_backend = rotary_backend
        self.pad_segment_tokens = pad_segment_tokens
        self.fusion = Fusion(*fusion)
        c = config
        self.merge = c.spatial_merge_size
        self.unit = c.spatial_merge_size**2
        self.num_heads = c.num_heads
        self.head_dim = c.hidden_size // c.num_heads
        if self.head_dim % 4:
            raise ValueError(f"head_dim {self.head_dim} must be divisible by 4 for the 2-D rotary embedding")
        self.in_features = c.in_channels * c.temporal_patch_size * c.patch_size * c.patch_size
        self.deepstack_visual_indexes = list(c.deepstack_visual_indexes)
        self.act = c.hidden_act
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
        self.compiled = None  # (attn_in, block_out) compiled by compile_blocks

    def with_options(self, **options) -> VisionEncoder:
        """A view of this encoder with other constructor options (``OPTIONS``), sharing its weights;
        for A/B runs."""
        return with_options(self, options, self.OPTIONS)

    def compile_blocks(self, **kwargs) -> VisionEncoder:
        """Compiles the per-block math around attention (one dynamic-shape graph shared by all blocks).

        Fuses LayerNorm, rotary, bias, GELU and residual work; attention stays as is. The result is
        still captured by the runtime's CUDA graphs. kwargs go to ``torch.compile``.
        """
        kwargs.setdefault("dynamic", True)
        self.compiled = (torch.compile(attn_in, **kwargs), torch.compile(block_out, **kwargs))
        return self

    @property
    def dtype(self) -> torch.dtype:
        return self.patch_embed.proj.weight.dtype

    def activation_bytes(self, tokens: int) -> int:
        """Estimated peak memory of ``run`` over ``tokens`` patches beyond the weights and the
        inputs: a block's larger phase -- attention (residual, norm, q/k/v, rotated q and k, output:
        8 x hidden) or MLP (block input, attention output, residual, norm, fc1 with its GELU, fc2's
        output: 5 x hidden + intermediate) -- with the outputs so far (embeddings and DeepStack,
        ``out`` per 4 patches each), float32 rotary angles, and one block of position-embedding
        taps. The unfused reference path (CPU, float32) keeps a few more temporaries."""
        c, size = self.config, self.dtype.itemsize
        hidden, inter = c.hidden_size, c.intermediate_size
        per_token = size * (max(8 * hidden, 5 * hidden + inter)
                            + (len(self.deepstack_visual_indexes) + 1) * c.out_hidden_size // self.unit)
        per_token += 4 * self.head_dim  # cos and sin, float32
        pos_block = min(tokens, POS_EMBED_BLOCK) * 4 * hidden * (2 * 4 + size)  # taps and products
        return tokens * per_token + pos_block

    @property
    def device(self) -> torch.device:
        return self.patch_embed.proj.weight.device

    def plan(self, grid_thw, num_tokens: int | None = None, num_segments: int | None = None) -> VisionPlan:
        """Host-side plan for ``grid_thw`` (a ``[n, 3]`` tensor or a list of triples); CPU tensors."""
        if isinstance(grid_thw, torch.Tensor):
            grid_thw = grid_thw.tolist()
        return plan_vision(grid_thw, self.merge, self.config.num_position_embeddings, num_tokens, num_segments,
                           self.pad_segment_tokens)

    def inv_freq(self, device: torch.device) -> torch.Tensor:
        """Rotary inverse frequencies ``[head_dim / 4]``, float32, cached per device (never cast)."""
        if device not in self._inv_freq:
            dim = self.head_dim // 2
            exps = torch.arange(0, dim, 2, dtype=torch.float32) / dim
            self._inv_freq[device] = (1.0 / (self.rope_theta**exps)).to(device)
        return self._inv_freq[device]

    def run(self, pixel_values: torch.Tensor, plan: VisionPlan,
            attn_backend: str | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Device forward over a plan whose tensors are on this module's device.

        Args:
            pixel_values: ``[T, C*Tp*P*P]`` flattened patches (T == plan.num_tokens).
            attn_backend: this call's attention backend (default: the encoder's).

        Returns:
            embeds ``[T/4, out_hidden]`` and one ``[T/4, out_hidden]`` tensor per DeepStack index.
        """
        backend = attn_backend or self.attn_backend
        x = self.add_pos_embed(self.patch_embed(pixel_values), plan)  # [T, hidden], a new tensor
        freqs = (plan.rope_pos[:, :, None] * self.inv_freq(x.device)).flatten(1)  # [T, head_dim/2]
        cos, sin = freqs.cos(), freqs.sin()
        if self.compiled is not None:  # compiled: inductor fuses the reference ops itself
            (pre, post), fusion = self.compiled, UNFUSED
            rotary = rotary_qkv_torch
        else:
            pre, post, fusion = attn_in, block_out, self.fusion.resolve(x, self.act)
            rotary = rotary_qkv_triton if use_triton(self.rotary_backend, x) else rotary_qkv_torch
        norms = [Norm.of(b.norm1) for b in self.blocks[1:]] + [Norm.of(self.merger.ln_q)]
        h = Norm.of(self.blocks[0].norm1)(x)
        deepstack = []
        for i, (block, next_norm) in enumerate(zip(self.blocks, norms)):
            w = block.weights()
            q, k, v = pre(w, h, cos, sin, self.num_heads, rotary)
            o = varlen_attention(q, k, v, plan.cu_seqlens, plan.max_seqlen, plan.seqlens, backend)
            del q, k, v, h  # the projection and this block's LN1 are freed before the MLP (peak memory)
            x, h = post(w, x, o, next_norm, self.act, None, fusion)
            if i in self.deepstack_visual_indexes:
                deepstack.append(self.merger_list[self.deepstack_visual_indexes.index(i)](x))
        return self.merger.project(h), deepstack

    def add_pos_embed(self, x: torch.Tensor, plan: VisionPlan) -> torch.Tensor:
        """``x`` plus each token's position embedding: the learned table's four bilinear taps, summed
        in float32, rounded to x's dtype (as transformers does), in blocks of ``POS_EMBED_BLOCK``
        tokens (see there); the rounding points are the whole call's, so results are bit-equal."""
        table, n = self.pos_embed.weight, x.shape[0]
        if n <= POS_EMBED_BLOCK:
            return x + (table[plan.pos_index].float() * plan.pos_weight[..., None]).sum(1).to(x.dtype)
        for a in range(0, n, POS_EMBED_BLOCK):  # in place: x is the patch embedding's own output
            b = min(a + POS_EMBED_BLOCK, n)
            x[a:b] += (table[plan.pos_index[a:b]].float() * plan.pos_weight[a:b, :, None]).sum(1).to(x.dtype)
        return x

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


__all__ = ["FRAME_LAYOUT_CACHE", "VisionEncoder", "VisionPlan", "forget_frame_layouts", "frame_layouts_made", "plan_vision",
           "PAD_SEGMENT_TOKENS"]
