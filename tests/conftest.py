"""Shared fixtures: tiny transformers configs, HF reference modules with non-trivial random weights."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

# The developer benchmarks (not installed) import as top-level modules, as they do when run.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

# Without CUDA, Triton kernels can only run in Triton's interpreter, which must be chosen before
# triton is first imported (transformers imports it below): tests/test_ops.py runs them there.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import (
    Qwen3OmniMoeAudioEncoderConfig,
    Qwen3OmniMoeVisionEncoderConfig,
)
from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import (
    Qwen3OmniMoeAudioEncoder,
    Qwen3OmniMoeVisionEncoder,
)

from omnienc.encoders import AudioEncoder, VisionEncoder, load_hf_weights


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def tiny_vision_config(**overrides) -> Qwen3OmniMoeVisionEncoderConfig:
    """A 4-block ViT (hidden 48, 4 heads of 12, patch 4, 8x8 position table), DeepStack at 0, 2, 3."""
    kw = dict(
        depth=4, hidden_size=48, intermediate_size=80, num_heads=4, patch_size=4, temporal_patch_size=2,
        in_channels=3, spatial_merge_size=2, out_hidden_size=40, num_position_embeddings=64,
        deepstack_visual_indexes=[0, 2, 3],
    )
    kw.update(overrides)
    cfg = Qwen3OmniMoeVisionEncoderConfig(**kw)
    cfg._attn_implementation = "sdpa"
    return cfg


def tiny_audio_config(**overrides) -> Qwen3OmniMoeAudioEncoderConfig:
    """A 2-layer AuT (d_model 32, 4 heads, 16 mel bins); chunk 100 frames, attention window 2 chunks."""
    kw = dict(
        num_mel_bins=16, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=64, d_model=32,
        output_dim=24, n_window=50, n_window_infer=200, downsample_hidden_size=8, max_source_positions=1500,
    )
    kw.update(overrides)
    cfg = Qwen3OmniMoeAudioEncoderConfig(**kw)
    cfg._attn_implementation = "sdpa"
    return cfg


@torch.no_grad()
def randomize_(module: torch.nn.Module) -> torch.nn.Module:
    """Fresh non-trivial weights everywhere: matrices ~ N(0, 1/fan_in), vectors (norms and biases
    included) random around their usual value, so a missed norm or bias shows up."""
    for name, p in module.named_parameters():
        if p.dim() >= 2:
            p.normal_(0.0, p[0].numel() ** -0.5)
        elif name.endswith("weight"):  # LayerNorm scales
            p.normal_(1.0, 0.3)
        else:
            p.normal_(0.0, 0.3)
    return module


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative L2 error of ``a`` against the reference ``b``."""
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def hf_and_native_vision(cfg=None):
    cfg = cfg or tiny_vision_config()
    hf = randomize_(Qwen3OmniMoeVisionEncoder(cfg).eval())
    native = VisionEncoder(cfg).eval()
    load_hf_weights(native, hf.state_dict())
    return hf, native


def hf_and_native_audio(cfg=None):
    cfg = cfg or tiny_audio_config()
    hf = randomize_(Qwen3OmniMoeAudioEncoder(cfg).eval())
    native = AudioEncoder(cfg).eval()
    load_hf_weights(native, hf.state_dict())
    return hf, native


@pytest.fixture(scope="module")
def vision_pair():
    return hf_and_native_vision()


@pytest.fixture(scope="module")
def audio_pair():
    return hf_and_native_audio()


def random_pixels(grid_thw, cfg) -> torch.Tensor:
    n = sum(t * h * w for t, h, w in grid_thw)
    return torch.randn(n, cfg.in_channels * cfg.temporal_patch_size * cfg.patch_size**2)
