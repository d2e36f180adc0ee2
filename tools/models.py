"""Building encoders for the tools: from a checkpoint, or with random weights at real, reduced or tiny
sizes; and HF + omnienc pairs with the same weights (``bench``)."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..encoders import AudioEncoder, VisionEncoder, load_hf_weights

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def real_configs():
    """The released Qwen3-Omni-30B-A3B encoder configs (transformers defaults + the 2048 output width)."""
    from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import (
        Qwen3OmniMoeAudioEncoderConfig,
        Qwen3OmniMoeVisionEncoderConfig,
    )

    return Qwen3OmniMoeVisionEncoderConfig(out_hidden_size=2048), Qwen3OmniMoeAudioEncoderConfig(output_dim=2048)


def reduced_configs():
    """Same structure and input formats as the real encoders (patch 16, 128 mel bins, 3 DeepStack
    taps, 100-frame chunks, 8 s windows), far fewer and narrower layers: for CPU demos."""
    from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import (
        Qwen3OmniMoeAudioEncoderConfig,
        Qwen3OmniMoeVisionEncoderConfig,
    )

    vision = Qwen3OmniMoeVisionEncoderConfig(
        depth=4, hidden_size=128, intermediate_size=256, num_heads=2, out_hidden_size=256,
        deepstack_visual_indexes=[1, 2, 3],
    )
    audio = Qwen3OmniMoeAudioEncoderConfig(
        encoder_layers=4, d_model=128, encoder_attention_heads=2, encoder_ffn_dim=256, output_dim=256,
        downsample_hidden_size=32,
    )
    return vision, audio


def tiny_configs():
    """A 4-block ViT (hidden 48, 4 heads, patch 4, 8x8 position table, DeepStack at 0, 2, 3) and a
    2-layer AuT (d_model 32, 4 heads, 16 mel bins, windows of 2 chunks): for CPU tests."""
    from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import (
        Qwen3OmniMoeAudioEncoderConfig,
        Qwen3OmniMoeVisionEncoderConfig,
    )

    vision = Qwen3OmniMoeVisionEncoderConfig(
        depth=4, hidden_size=48, intermediate_size=80, num_heads=4, patch_size=4, temporal_patch_size=2,
        in_channels=3, spatial_merge_size=2, out_hidden_size=40, num_position_embeddings=64,
        deepstack_visual_indexes=[0, 2, 3],
    )
    audio = Qwen3OmniMoeAudioEncoderConfig(
        num_mel_bins=16, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=64, d_model=32,
        output_dim=24, n_window=50, n_window_infer=200, downsample_hidden_size=8, max_source_positions=1500,
    )
    return vision, audio


def build_encoders(checkpoint=None, device="cpu", dtype="bfloat16", sizes="real", attn_backend="auto"):
    """Returns ``(vision, audio)`` encoders in eval mode on ``device``.

    Args:
        checkpoint: a Qwen3-Omni checkpoint folder; None -> random weights.
        sizes: with random weights, ``real`` (538.6M + 647.9M parameters) or ``reduced``.
    """
    dt = DTYPES[dtype]
    if checkpoint is not None:
        return (
            VisionEncoder.from_pretrained(checkpoint, dtype=dt, device=device, attn_backend=attn_backend),
            AudioEncoder.from_pretrained(checkpoint, dtype=dt, device=device, attn_backend=attn_backend),
        )
    vcfg, acfg = real_configs() if sizes == "real" else reduced_configs()
    with torch.device(device):
        vis = VisionEncoder(vcfg, attn_backend=attn_backend).to(dt).eval()
        aud = AudioEncoder(acfg, attn_backend=attn_backend).to(dt).eval()
    return vis, aud


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def device_from_arg(name: str | None, flag: str = "--device") -> torch.device:
    """The device a ``--device`` value names: ``cuda``, ``cuda:N`` or ``cpu`` (None: cuda if
    available), checked before any work. Raises ``ValueError`` saying what to pass instead."""
    name = default_device() if name is None else name
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"{flag} {name!r} is not a device; pass cuda, cuda:N or cpu") from None
    if device.type not in ("cuda", "cpu"):
        raise ValueError(f"{flag} {name!r} is not supported; pass cuda, cuda:N or cpu")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{flag} {name}: CUDA is not available here (this torch has no CUDA build, or no GPU "
                             "is visible); pass --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"{flag} {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    return device


# --- several devices ------------------------------------------------------------------------------


def parse_devices(text: str, count: int | None = None) -> list[int]:
    """CUDA device indices from a ``--devices`` value such as ``"0,1"``: distinct integers >= 0 below
    ``count`` (default: ``torch.cuda.device_count()``), in the order given.

    Raises ``ValueError`` naming the bad entry (not an integer, negative, repeated, or a device that
    does not exist).
    """
    count = torch.cuda.device_count() if count is None else count
    items = [s.strip() for s in str(text).split(",")]
    if not any(items) or not all(items):
        raise ValueError(f"--devices {text!r}: give CUDA device indices separated by commas, e.g. 0,1")
    out: list[int] = []
    for s in items:
        try:
            index = int(s)
        except ValueError:
            index = -1
        if index < 0:
            raise ValueError(f"--devices {text!r}: {s!r} is not a device index (an integer >= 0)")
        if index in out:
            raise ValueError(f"--devices {text!r}: device {index} is given twice")
        out.append(index)
    for index in out:
        if index >= count:
            seen = "no CUDA device is visible" if count == 0 else \
                f"{count} CUDA device{'s' if count > 1 else ''} visible ({', '.join(map(str, range(count)))})"
            raise ValueError(f"--devices {text!r}: device {index} does not exist: {seen}")
    return out


def replicate(module: torch.nn.Module, device) -> torch.nn.Module:
    """A copy of ``module`` (same weights) on ``device``: one runtime per device serves the same model."""
    return copy.deepcopy(module).to(device)


def device_context(device):
    """Makes ``device`` the current CUDA device for the block (streams, events, Triton launches and
    graph capture follow the current device); nothing on other devices."""
    device = torch.device(device)
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


# --- HF and omnienc encoders with the same weights ------------------------------------------------


def encoder_configs(tiny: bool):
    """(vision, audio) configs for an HF + omnienc pair: ``real_configs()`` or, for CPU tests,
    ``tiny_configs()``; HF's attention set to SDPA."""
    vcfg, acfg = tiny_configs() if tiny else real_configs()
    vcfg._attn_implementation = "sdpa"
    acfg._attn_implementation = "sdpa"
    return vcfg, acfg


@dataclass
class Models:
    """HF encoders and omnienc encoders holding the same weights (None: modality not built or freed)."""

    vision_cfg: object
    audio_cfg: object
    hf_vision: torch.nn.Module | None = None
    hf_audio: torch.nn.Module | None = None
    vision: torch.nn.Module | None = None
    audio: torch.nn.Module | None = None


def _build_hf(cls, cfg, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """An HF encoder built directly in ``dtype`` on ``device`` (as ``from_pretrained(dtype=...)`` does:
    parameters in ``dtype``, fp32 buffers such as rotary frequencies stay fp32)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            return cls(cfg).eval()
    finally:
        torch.set_default_dtype(previous)


def build_models(vcfg, acfg, modalities: Sequence[str], device: torch.device, dtype: torch.dtype) -> Models:
    """HF encoders with their random init, and omnienc encoders loaded with the same weights."""
    from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import (
        Qwen3OmniMoeAudioEncoder,
        Qwen3OmniMoeVisionEncoder,
    )

    m = Models(vcfg, acfg)
    with torch.no_grad():
        if "vision" in modalities:
            m.hf_vision = _build_hf(Qwen3OmniMoeVisionEncoder, vcfg, device, dtype)
            with torch.device(device):
                m.vision = VisionEncoder(vcfg).to(dtype).eval()
            load_hf_weights(m.vision, m.hf_vision.state_dict())
        if "audio" in modalities:
            m.hf_audio = _build_hf(Qwen3OmniMoeAudioEncoder, acfg, device, dtype)
            with torch.device(device):
                m.audio = AudioEncoder(acfg).to(dtype).eval()
            load_hf_weights(m.audio, m.hf_audio.state_dict())
    return m
