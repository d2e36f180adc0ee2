"""Contract: omnienc's encoders, dropped into a transformers Qwen3-Omni Thinker, give its logits.

A tiny fp32 Thinker (random weights, LayerNorms included) reads one prompt holding images, a video
(t > 1) and an audio, laid out as the Qwen3-Omni processor does:
``<vision_start> <image_pad>*n <vision_end>``, same with ``<video_pad>``, and
``<audio_start> <audio_pad>*L <audio_end>``. Logits from HF's encoders are the reference; the same
Thinker with adapters around other encoders must match them to 1e-5 relative.

Every MoE layer routes each token to all its experts, so no top-k choice can flip on fp32 noise.
"""

from __future__ import annotations

import copy
import random

import pytest
import torch
from torch import nn
from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import Qwen3OmniMoeThinkerConfig
from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import Qwen3OmniMoeThinkerForConditionalGeneration

from omnienc.integrations.hf_thinker import HFAudioAdapter, HFVisionAdapter, encoder_holder, swap_thinker_encoders

HIDDEN = 64  # text hidden size = vision out_hidden_size = audio output_dim
N_TEXT = 100  # plain text tokens are 0..99; special tokens follow
AUDIO, IMAGE, VIDEO, AUDIO_START, AUDIO_END, VISION_START, VISION_END = range(100, 107)
RTOL = 1e-5


def tiny_thinker_config() -> Qwen3OmniMoeThinkerConfig:
    return Qwen3OmniMoeThinkerConfig(
        text_config=dict(
            vocab_size=128, hidden_size=HIDDEN, intermediate_size=96, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=2, moe_intermediate_size=32,
            num_experts=4, num_experts_per_tok=4, mlp_only_layers=[3],
            # head_dim 16 -> 8 rotary frequencies, interleaved over (t, h, w) as in the checkpoint.
            rope_parameters=dict(rope_type="default", rope_theta=10000.0, mrope_section=[4, 2, 2], interleaved=True),
        ),
        vision_config=dict(
            depth=4, hidden_size=32, intermediate_size=48, num_heads=2, in_channels=3, patch_size=4,
            temporal_patch_size=2, spatial_merge_size=2, out_hidden_size=HIDDEN,
            num_position_embeddings=64, deepstack_visual_indexes=[0, 1, 3],
        ),
        audio_config=dict(
            num_mel_bins=16, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=48, d_model=32,
            n_window=50, n_window_infer=200, downsample_hidden_size=8, output_dim=HIDDEN,
        ),
        audio_token_id=AUDIO, image_token_id=IMAGE, video_token_id=VIDEO,
        audio_start_token_id=AUDIO_START, vision_start_token_id=VISION_START,
    )


@torch.no_grad()
def randomize_(module: nn.Module) -> None:
    """Non-trivial values everywhere: norm weights ~1 +- 0.25, biases ~0.1, matrices ~1/sqrt(fan_in)."""
    for name, p in module.named_parameters():
        if p.ndim == 1:
            p.copy_(torch.randn_like(p) * 0.25 + (0.0 if name.endswith("bias") else 1.0))
        else:
            fan_in = p.shape[-1] if p.ndim <= 3 else p[0].numel()  # Linear/experts [.., out, in]; conv [out, ...]
            p.copy_(torch.randn_like(p) * fan_in**-0.5)


def build_thinker() -> Qwen3OmniMoeThinkerForConditionalGeneration:
    thinker = Qwen3OmniMoeThinkerForConditionalGeneration(tiny_thinker_config()).eval()
    randomize_(thinker)
    return thinker


def audio_tokens(frames: int) -> int:
    """Audio tokens for ``frames`` mel frames: 13 per full 100-frame chunk, then the tail's conv length."""
    out, tail = 13 * (frames // 100), frames % 100
    if tail:
        for _ in range(3):  # three stride-2 convs, padding 1
            tail = (tail - 1) // 2 + 1
        out += tail
    return out


def random_prompt(cfg: Qwen3OmniMoeThinkerConfig) -> dict:
    """Thinker.forward kwargs for one fresh random prompt: 1-2 images, one video, one audio."""
    vc, ac = cfg.vision_config, cfg.audio_config
    patch_dim = vc.in_channels * vc.temporal_patch_size * vc.patch_size**2
    merge = vc.spatial_merge_size

    def even() -> int:
        return merge * random.randint(1, 5)

    image_grid = torch.tensor([[1, even(), even()] for _ in range(random.randint(1, 2))])
    video_grid = torch.tensor([[random.randint(2, 3), even(), even()]])
    frames = random.randint(1, 450)  # 1 frame .. 4.5 chunks; > 200 frames spans several attention windows
    padded = frames + random.randint(0, 30)  # feature_attention_mask drops the rest

    def text() -> list[int]:
        return [random.randrange(N_TEXT) for _ in range(random.randint(1, 4))]

    def span(start: int, pad: int, n: int, end: int) -> list[int]:
        return [start] + [pad] * n + [end]

    # The Thinker numbers images in prompt order, so image_grid rows follow the prompt.
    kinds = ["image"] * len(image_grid) + ["video", "audio"]
    random.shuffle(kinds)
    images = iter(image_grid)
    ids = text()
    for kind in kinds:
        if kind == "image":
            ids += span(VISION_START, IMAGE, int(next(images).prod()) // merge**2, VISION_END)
        elif kind == "video":
            ids += span(VISION_START, VIDEO, int(video_grid[0].prod()) // merge**2, VISION_END)
        else:
            ids += span(AUDIO_START, AUDIO, audio_tokens(frames), AUDIO_END)
        ids += text()
    ids = torch.tensor([ids])

    mask = torch.zeros(1, padded, dtype=torch.long)
    mask[0, :frames] = 1
    return dict(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        pixel_values=torch.randn(int(image_grid.prod(-1).sum()), patch_dim),
        image_grid_thw=image_grid,
        pixel_values_videos=torch.randn(int(video_grid.prod(-1).sum()), patch_dim),
        video_grid_thw=video_grid,
        video_second_per_grid=torch.tensor([random.choice([0.5, 1.0, 2.0])]),
        input_features=torch.randn(1, ac.num_mel_bins, padded),
        feature_attention_mask=mask,
        use_cache=False,
    )


class HFVisionStandIn(nn.Module):
    """The native vision call signature over an HF encoder (proves the adapter plumbing alone)."""

    def __init__(self, hf: nn.Module):
        super().__init__()
        self.hf, self.config = hf, hf.config

    def forward(self, pixel_values, grid_thw):
        out = self.hf(pixel_values, grid_thw=grid_thw)
        return out.pooler_output, out.deepstack_features


class HFAudioStandIn(nn.Module):
    """The native audio call signature over an HF encoder."""

    def __init__(self, hf: nn.Module):
        super().__init__()
        self.hf, self.config = hf, hf.config

    def forward(self, input_features, feature_lens):
        return self.hf(input_features, feature_lens=feature_lens).last_hidden_state


def swap_in(thinker, kind: str) -> dict[str, nn.Module]:
    if kind == "hf_standin":
        return swap_thinker_encoders(
            thinker,
            vision=HFVisionStandIn(copy.deepcopy(encoder_holder(thinker).visual)),
            audio=HFAudioStandIn(copy.deepcopy(encoder_holder(thinker).audio_tower)),
        )
    from omnienc.encoders import AudioEncoder, VisionEncoder

    cfg = thinker.config
    return swap_thinker_encoders(
        thinker, vision=VisionEncoder(cfg.vision_config), audio=AudioEncoder(cfg.audio_config), copy_weights=True
    )


def record(module: nn.Module, outputs: list):
    """Appends each call's encoder tensors to ``outputs`` (before the Thinker splits pooler_output)."""

    def hook(_, __, out):
        if hasattr(out, "deepstack_features"):
            outputs.append([out.pooler_output, *out.deepstack_features])
        else:
            outputs.append([out.last_hidden_state])

    return module.register_forward_hook(hook)


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    return ((got - ref).abs().max() / ref.abs().max()).item()


def describe(prompt: dict) -> str:
    """The random draw, for failure messages."""
    return (
        f"{prompt['input_ids'].shape[1]} tokens, images {prompt['image_grid_thw'].tolist()}, "
        f"video {prompt['video_grid_thw'].tolist()}, audio {int(prompt['feature_attention_mask'].sum())} frames"
    )


@pytest.mark.parametrize("kind", ["hf_standin", "native"])
@torch.no_grad()
def test_thinker_logits_match_with_swapped_encoders(kind):
    thinker = build_thinker()
    prompt = random_prompt(thinker.config)
    ref_vis, ref_aud = [], []
    handles = [record(encoder_holder(thinker).visual, ref_vis), record(encoder_holder(thinker).audio_tower, ref_aud)]
    ref = thinker(**prompt).logits
    assert len(ref_vis) == 2 and len(ref_aud) == 1  # images, then the video; one audio call
    assert (prompt["input_ids"] == AUDIO).sum() == ref_aud[0][0].shape[0], describe(prompt)
    for h in handles:
        h.remove()

    replaced = swap_in(thinker, kind)
    assert isinstance(encoder_holder(thinker).visual, HFVisionAdapter) and isinstance(encoder_holder(thinker).audio_tower, HFAudioAdapter)
    assert replaced["visual"] is not encoder_holder(thinker).visual and replaced["audio_tower"] is not encoder_holder(thinker).audio_tower
    got_vis, got_aud, stale = [], [], []
    record(encoder_holder(thinker).visual, got_vis)
    record(encoder_holder(thinker).audio_tower, got_aud)
    for old in replaced.values():
        record(old, stale)
    got = thinker(**prompt).logits

    assert len(got_vis) == 2 and len(got_aud) == 1, "the Thinker did not call the adapters"
    assert not stale, "the Thinker still called its HF encoders"
    calls = {"image": (got_vis[0], ref_vis[0]), "video": (got_vis[1], ref_vis[1]), "audio": (got_aud[0], ref_aud[0])}
    for name, (got_call, ref_call) in calls.items():
        for j, (g, r) in enumerate(zip(got_call, ref_call, strict=True)):
            what = f"{name} {'embeds' if j == 0 else f'deepstack {j - 1}'} ({describe(prompt)})"
            assert g.shape == r.shape, f"{what}: shape {tuple(g.shape)} != HF {tuple(r.shape)}"
            assert rel_err(g, r) <= RTOL, f"{what}: rel err {rel_err(g, r):.2e}"
    err = rel_err(got, ref)
    assert err <= RTOL, f"logits rel err {err:.2e} > {RTOL:g} ({describe(prompt)})"


@torch.no_grad()
def test_logits_see_every_encoder_output():
    """The tolerance means something: a 1e-3 relative change of any one encoder output moves the logits."""
    thinker = build_thinker()
    prompt = random_prompt(thinker.config)
    swap_in(thinker, "hf_standin")
    ref = thinker(**prompt).logits

    def nudge(t):
        return t * (1 + 1e-3 * torch.randn_like(t))

    outputs = {
        "vision embeds": (encoder_holder(thinker).visual, "pooler_output"),
        "deepstack": (encoder_holder(thinker).visual, "deepstack_features"),
        "audio embeds": (encoder_holder(thinker).audio_tower, "last_hidden_state"),
    }
    for what, (module, field) in outputs.items():

        def hook(_, __, out, field=field):
            value = getattr(out, field)
            setattr(out, field, [nudge(v) for v in value] if isinstance(value, list) else nudge(value))
            return out

        handle = module.register_forward_hook(hook)
        err = rel_err(thinker(**prompt).logits, ref)
        handle.remove()
        assert err > 2 * RTOL, f"nudging {what} moved the logits by only {err:.2e} ({describe(prompt)})"
