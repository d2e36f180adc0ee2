"""Building encoders for the tools: from a checkpoint, or with random weights at real or reduced sizes."""

from __future__ import annotations

import torch

from ..encoders import AudioEncoder, VisionEncoder

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
