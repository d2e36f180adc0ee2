"""Qwen3-Omni audio encoder (Whisper-style AuT): conv front-end per chunk, windowed attention.

Numerically follows transformers' ``Qwen3OmniMoeAudioEncoder`` run on one audio at a time;
submodule names mirror its ``state_dict()`` keys.

Every audio of T mel frames is cut into ``ceil(T / F)`` chunks of F = 2 * n_window frames (100).
The conv front-end turns a chunk into ``tpc`` tokens (13); the tail chunk keeps ``l(T mod F)``.
Attention runs in windows of ``tpc * (n_window_infer // F)`` tokens (104) from each audio's start.

Per-audio semantics (the reference is HF on that audio alone): an audio of at least F frames has its
tail chunk zero-padded to F frames *before* the convolutions, and the padded steps are not masked
(HF lets GELU(bias) of padded steps leak into the tail tokens); a shorter audio is convolved at its
own length, which we reproduce by masking each conv output beyond its valid length. So an audio's
output never depends on what it was packed with.

``plan_audio`` (host) computes chunk masks, the valid-token gather and the attention windows, padded
to a bucket's fixed sizes if asked; ``AudioEncoder.run`` (device) is the capturable forward.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from .attention import varlen_attention
from .block import UNFUSED, BlockWeights, Fusion, Norm, activation, block_out, block_qkv, with_options
from .ops import audio_front
from .ops.audio_front import conv_len


def conv_lens(n: int) -> tuple[int, int, int]:
    """Time lengths after each of the three convolutions."""
    a = conv_len(n)
    b = conv_len(a)
    return a, b, conv_len(b)


def audio_output_length(frames: int, n_window: int = 50) -> int:
    """Tokens the encoder emits for an audio of ``frames`` mel frames (13 per full 100-frame chunk)."""
    chunk = 2 * n_window
    return (frames // chunk) * conv_lens(chunk)[2] + conv_lens(frames % chunk)[2]


@dataclass
class AudioPlan:
    """Host-computed layout of one audio batch (C chunks, L tokens, S windows, padding included).

    Attributes:
        conv_valid: ``[C, 3]`` int64 valid time steps after each convolution; steps beyond are zeroed.
        token_index: ``[L]`` int64 rows of the ``[C * tpc]`` token grid to keep: the real tokens of
            every audio in order, then padding rows.
        cu_seqlens: ``[S + 1]`` int32 attention windows (real ones, then padding).
        seqlens: the S window lengths, on the host.
        max_seqlen: the longest window.
        num_real: real tokens; they come first.
    """

    conv_valid: torch.Tensor
    token_index: torch.Tensor
    cu_seqlens: torch.Tensor
    seqlens: tuple[int, ...]
    max_seqlen: int
    num_real: int

    TENSORS = ("conv_valid", "token_index", "cu_seqlens")

    @property
    def num_chunks(self) -> int:
        return self.conv_valid.shape[0]

    @property
    def num_tokens(self) -> int:
        return self.token_index.shape[0]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> AudioPlan:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in self.TENSORS:
            moved[name] = moved[name].to(device, non_blocking=non_blocking)
        return AudioPlan(**moved)


def plan_audio(
    feature_lens: Sequence[int],
    n_window: int,
    n_window_infer: int,
    num_chunks: int | None = None,
    num_tokens: int | None = None,
    num_segments: int | None = None,
) -> AudioPlan:
    """Builds the host-side plan for audios of ``feature_lens`` mel frames.

    Args:
        num_chunks: pad to this many chunks (a bucket's frames / F); default: no padding.
        num_tokens: pad the token axis to this many rows; default: ``num_chunks * tpc`` when padding
            chunks, else the real token count.
        num_segments: pad ``cu_seqlens`` with zero-length windows to this many; default: as needed.
    """
    chunk = 2 * n_window
    full = conv_lens(chunk)
    tpc = full[2]
    window = tpc * max(n_window_infer // chunk, 1)
    # Python ints per chunk, one tensor op for all the token rows: this runs on the host before
    # every pack of a new layout, while the device may wait for it.
    conv_valid, kept, seqlens = [], [], []
    for T in feature_lens:
        T = int(T)
        n, tail = divmod(T, chunk)
        if T < chunk:
            conv_valid.append(conv_lens(T))
        else:
            conv_valid += [full] * (n + (tail > 0))
        kept += [tpc] * n + ([conv_lens(tail)[2]] if tail else [])
        L = audio_output_length(T, n_window)
        seqlens += [window] * (L // window) + ([L % window] if L % window else [])
    c, num_real = len(kept), sum(kept)
    total_chunks = c if num_chunks is None else num_chunks
    if total_chunks < c:
        raise ValueError(f"plan needs {c} chunks but only {total_chunks} were allowed")
    conv_valid += [full] * (total_chunks - c)
    total = num_tokens if num_tokens is not None else (num_real if num_chunks is None else total_chunks * tpc)
    if not num_real <= total <= total_chunks * tpc:
        raise ValueError(f"token count {total} must lie in [{num_real}, {total_chunks * tpc}]")
    # Each chunk's first kept rows, in order; padding tokens are the first rows no chunk keeps.
    rows = torch.arange(total_chunks * tpc).view(total_chunks, tpc)
    keep = torch.arange(tpc) < torch.tensor(kept + [0] * (total_chunks - c), dtype=torch.int64).view(total_chunks, 1)
    index = rows[keep]
    pad = total - num_real
    if pad:
        index = torch.cat([index, rows[~keep][:pad]])
        seqlens += [window] * (pad // window) + ([pad % window] if pad % window else [])
    if num_segments is not None:
        if len(seqlens) > num_segments:
            raise ValueError(f"plan needs {len(seqlens)} attention windows but only {num_segments} were allowed")
        seqlens += [0] * (num_segments - len(seqlens))
    cu = torch.zeros(len(seqlens) + 1, dtype=torch.int32)
    cu[1:] = torch.tensor(seqlens, dtype=torch.int64).cumsum(0)
    return AudioPlan(
        conv_valid=torch.tensor(conv_valid, dtype=torch.int64).reshape(-1, 3),
        token_index=index,
        cu_seqlens=cu,
        seqlens=tuple(seqlens),
        max_seqlen=max(seqlens, default=0),
        num_real=num_real,
    )


def chunk_features(input_features: torch.Tensor, feature_lens: Sequence[int], n_window: int) -> torch.Tensor:
    """``[mel, sum T]`` concatenated features -> ``[C, mel, F]`` zero-padded chunks (F = 2 * n_window)."""
    chunk = 2 * n_window
    out, start = [], 0
    for T in feature_lens:
        T = int(T)
        n = math.ceil(T / chunk)
        x = F.pad(input_features[:, start : start + T], (0, n * chunk - T))  # [mel, n * F]
        out.append(x.view(x.shape[0], n, chunk).transpose(0, 1))
        start += T
    if start != input_features.shape[1]:
        raise ValueError(f"feature_lens add up to {start}, but input_features has {input_features.shape[1]} frames")
    return torch.cat(out) if out else input_features.new_zeros(0, input_features.shape[0], chunk)


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """Whisper position table ``[length, channels]``: sin then cos, float32."""
    increment = math.log(max_timescale) / (channels // 2 - 1)
    inv = torch.exp(-increment * torch.arange(channels // 2).float())
    t = torch.arange(length)[:, None] * inv[None, :]
    return torch.cat([torch.sin(t), torch.cos(t)], dim=1)


def attn_in(w: BlockWeights, h: torch.Tensor, num_heads: int):
    """LN(x) -> q, k, v ``[L, H, D]`` (views of the stacked projection)."""
    return block_qkv(w, h).view(h.shape[0], 3, num_heads, -1).unbind(1)


class AudioAttention(nn.Module):
    """Parameters of one attention: ``qkv`` (HF's q_proj, k_proj and v_proj stacked, one GEMM) and
    ``out_proj``.

    ``state_dict()`` and ``load_state_dict()`` speak HF's names: ``q_proj.weight`` and friends are
    views into the stacked tensors, so ``load_hf_weights`` writes straight into them.
    """

    PARTS = ("q_proj", "k_proj", "v_proj")

    def __init__(self, d_model: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.d_model = d_model
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=True)
        self.out_proj = nn.Linear(d_model, d_model, bias=True)
        self.register_state_dict_post_hook(AudioAttention._split_qkv)
        self.register_load_state_dict_pre_hook(AudioAttention._stack_qkv)

    @staticmethod
    def _split_qkv(module, state_dict, prefix, local_metadata) -> None:
        d = module.d_model
        for kind in ("weight", "bias"):
            stacked = state_dict.pop(f"{prefix}qkv.{kind}")
            for i, part in enumerate(AudioAttention.PARTS):
                state_dict[f"{prefix}{part}.{kind}"] = stacked[i * d : (i + 1) * d]

    @staticmethod
    def _stack_qkv(module, state_dict, prefix, *args) -> None:
        for kind in ("weight", "bias"):
            keys = [f"{prefix}{part}.{kind}" for part in AudioAttention.PARTS]
            if all(k in state_dict for k in keys):
                state_dict[f"{prefix}qkv.{kind}"] = torch.cat([state_dict.pop(k) for k in keys])


class AudioLayer(nn.Module):
    """Pre-norm layer: x += attn(LN(x)); x += fc2(act(fc1(LN(x)))) (the math is in ``encoders.block``)."""

    def __init__(self, cfg):
        super().__init__()
        self.self_attn = AudioAttention(cfg.d_model, cfg.encoder_attention_heads)
        self.self_attn_layer_norm = nn.LayerNorm(cfg.d_model)
        self.fc1 = nn.Linear(cfg.d_model, cfg.encoder_ffn_dim)
        self.fc2 = nn.Linear(cfg.encoder_ffn_dim, cfg.d_model)
        self.final_layer_norm = nn.LayerNorm(cfg.d_model)

    def weights(self) -> BlockWeights:
        a = self.self_attn
        return BlockWeights(a.qkv.weight, a.qkv.bias, a.out_proj.weight, a.out_proj.bias,
                            Norm.of(self.final_layer_norm), self.fc1.weight, self.fc1.bias, self.fc2.weight,
                            self.fc2.bias)


class AudioEncoder(nn.Module):
    """Native Qwen3-Omni audio encoder.

    Args:
        config: transformers' ``Qwen3OmniMoeAudioEncoderConfig``.
        attn_backend: see ``encoders.attention``.
        fusion: how the conv front-end and each layer fuse their elementwise work (residual adds,
            LayerNorms, GELU, masks; ``block.Fusion``); ``block.UNFUSED`` runs the separate passes
            of the reference.
    """

    def __init__(self, config, attn_backend: str = "auto", fusion: Fusion = Fusion()):
        super().__init__()
        self.config = config
        self.attn_backend = attn_backend
        self.fusion = Fusion(*fusion)
        c = config
        self.n_window = c.n_window
        self.n_window_infer = c.n_window_infer
        self.chunk_frames = 2 * c.n_window
        self.head_dim = c.d_model // c.encoder_attention_heads
        hidden = c.downsample_hidden_size
        freq = conv_lens(c.num_mel_bins)[2]
        self.conv2d1 = nn.Conv2d(1, hidden, 3, 2, padding=1)
        self.conv2d2 = nn.Conv2d(hidden, hidden, 3, 2, padding=1)
        self.conv2d3 = nn.Conv2d(hidden, hidden, 3, 2, padding=1)
        # The front-end runs channels-last (cuDNN's native layout: no layout conversions per call).
        for conv in (self.conv2d2, self.conv2d3):
            conv.weight.data = conv.weight.data.contiguous(memory_format=torch.channels_last)
        self.conv_out = nn.Linear(hidden * freq, c.d_model, bias=False)
        self.layers = nn.ModuleList([AudioLayer(c) for _ in range(c.encoder_layers)])
        self.ln_post = nn.LayerNorm(c.d_model)
        self.proj1 = nn.Linear(c.d_model, c.d_model)
        self.act = activation(c.activation_function)
        self.proj2 = nn.Linear(c.d_model, c.output_dim)
        self.tokens_per_chunk = conv_lens(self.chunk_frames)[2]
        self._pos: dict[torch.device, torch.Tensor] = {}
        self.compiled = None  # (attn_in, block_out) compiled by compile_blocks

    OPTIONS = ("attn_backend", "fusion")

    def with_options(self, **options) -> AudioEncoder:
        """A view of this encoder with other constructor options (``OPTIONS``), sharing its weights;
        for A/B runs."""
        return with_options(self, options, self.OPTIONS)

    def compile_blocks(self, **kwargs) -> AudioEncoder:
        """Compiles the per-layer math around attention (one dynamic-shape graph shared by all layers):
        fuses LayerNorm, bias, GELU and residual work. kwargs go to ``torch.compile``."""
        kwargs.setdefault("dynamic", True)
        self.compiled = (torch.compile(attn_in, **kwargs), torch.compile(block_out, **kwargs))
        return self

    @property
    def dtype(self) -> torch.dtype:
        return self.conv_out.weight.dtype

    def activation_bytes(self, chunks: int) -> int:
        """Estimated peak memory of ``run`` over ``chunks`` 100-frame chunks beyond the weights and
        the inputs: the first convolution's patches, output and GELU (every later activation is
        at least 4x smaller), which dominate."""
        c, size = self.config, self.dtype.itemsize
        positions = conv_len(c.num_mel_bins) * conv_len(self.chunk_frames)
        return chunks * size * positions * (16 + 2 * c.downsample_hidden_size)

    @property
    def device(self) -> torch.device:
        return self.conv_out.weight.device

    def front_end(self, chunks: torch.Tensor, conv_valid: torch.Tensor) -> torch.Tensor:
        """The three stride-2 convolutions with GELU, steps beyond ``conv_valid`` zeroed after each.

        ``chunks [C, mel, F]`` -> ``[C, t3, ch * f3]`` (channel-major features, as HF flattens them);
        activations channels-last throughout (cuDNN's native layout). ``fusion.front`` picks the
        passes (``ops.audio_front``): ``torch``, the reference, runs conv1 as a GEMM over the 3x3
        patches, conv2 and conv3 in cuDNN, then a GELU pass and a mask pass after each and a copy
        to flatten; ``triton`` (``auto`` on CUDA) runs conv1 as one aligned GEMM over its patches
        and conv2 and conv3 in cuDNN, all without bias, each followed by one Triton pass of bias +
        GELU + mask (+ flatten for the last).
        """
        convs = [(c.weight, c.bias) for c in (self.conv2d1, self.conv2d2, self.conv2d3)]
        return audio_front(chunks, convs, conv_valid, self.fusion.front)

    def plan(self, feature_lens, num_chunks=None, num_tokens=None, num_segments=None) -> AudioPlan:
        """Host-side plan for ``feature_lens`` (a ``[B]`` tensor or a list); CPU tensors."""
        if isinstance(feature_lens, torch.Tensor):
            feature_lens = feature_lens.tolist()
        return plan_audio(feature_lens, self.n_window, self.n_window_infer, num_chunks, num_tokens, num_segments)

    def positions(self, device: torch.device) -> torch.Tensor:
        """Sinusoidal table rows for one chunk ``[tpc, d_model]``, float32, cached per device."""
        if device not in self._pos:
            table = sinusoids(self.config.max_source_positions, self.config.d_model)
            self._pos[device] = table[: self.tokens_per_chunk].to(device)
        return self._pos[device]

    def run(self, chunks: torch.Tensor, plan: AudioPlan, attn_backend: str | None = None) -> torch.Tensor:
        """Device forward over a plan whose tensors are on this module's device.

        Args:
            chunks: ``[C, mel, F]`` zero-padded chunks (C == plan.num_chunks).
            attn_backend: this call's attention backend (default: the encoder's).

        Returns:
            ``[L, output_dim]`` (L == plan.num_tokens; the first plan.num_real rows are real).
        """
        backend = attn_backend or self.attn_backend
        x = self.front_end(chunks, plan.conv_valid)  # [C, tpc, ch * f]
        x = self.conv_out(x)  # [C, tpc, d_model]
        x = x + self.positions(x.device).to(x.dtype)
        x = x.flatten(0, 1).index_select(0, plan.token_index)  # [L, d_model]
        pre, post = self.compiled or (attn_in, block_out)
        fusion = UNFUSED if self.compiled else self.fusion.resolve(x, self.config.activation_function)
        # fp16 is clamped finite after each layer, as in the reference.
        clamp = torch.finfo(x.dtype).max - 1000 if x.dtype == torch.float16 else None
        norms = [Norm.of(layer.self_attn_layer_norm) for layer in self.layers[1:]] + [Norm.of(self.ln_post)]
        h = Norm.of(self.layers[0].self_attn_layer_norm)(x)
        heads = self.config.encoder_attention_heads
        for layer, next_norm in zip(self.layers, norms):
            w = layer.weights()
            q, k, v = pre(w, h, heads)
            o = varlen_attention(q, k, v, plan.cu_seqlens, plan.max_seqlen, plan.seqlens, backend)
            del q, k, v, h  # the projection and this block's LN1 are freed before the MLP (peak memory)
            x, h = post(w, x, o, next_norm, self.config.activation_function, clamp, fusion)
        return self.proj2(self.act(self.proj1(h)))

    def forward(self, input_features: torch.Tensor, feature_lens) -> torch.Tensor:
        """HF-shaped call: ``input_features [mel, sum T]``, ``feature_lens [B]`` -> ``[sum L, output_dim]``."""
        lens = feature_lens.tolist() if isinstance(feature_lens, torch.Tensor) else list(feature_lens)
        plan = self.plan(lens).to(input_features.device)
        return self.run(chunk_features(input_features, lens, self.n_window), plan)

    @classmethod
    def from_pretrained(cls, checkpoint_dir, dtype=torch.bfloat16, device="cpu", attn_backend="auto") -> AudioEncoder:
        """Builds from ``thinker_config.audio_config`` and loads ``thinker.audio_tower.*`` weights.

        Raises:
            CheckpointError: a malformed ``config.json`` or index, or a config without a field that
                changes the computation (``weights.REQUIRED_CONFIG_FIELDS``); names the file and field.
            WeightLoadError: missing, unexpected, non-float, mis-shaped or non-finite weights.
        """
        from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import Qwen3OmniMoeAudioEncoderConfig

        from .weights import load_hf_weights, read_encoder_config

        config = read_encoder_config(checkpoint_dir, "audio_config", Qwen3OmniMoeAudioEncoderConfig)
        with torch.device(device):
            model = cls(config, attn_backend=attn_backend).to(dtype)
        load_hf_weights(model, checkpoint_dir, prefix="thinker.audio_tower.")
        return model.eval()


__all__ = ["AudioEncoder", "AudioPlan", "plan_audio", "chunk_features", "audio_output_length"]
