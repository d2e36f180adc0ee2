"""A Qwen3-Omni checkpoint directory with random encoder weights, laid out as M* loads one.

``write_checkpoint(root, vision_config, audio_config)`` writes what ``Qwen3OmniModel`` reads when it
is created and when it builds its encoder nodes, and what omnienc's loader reads:

- ``config.json``: a ``Qwen3OmniMoeConfig`` whose Thinker holds the given encoder configs and a small
  text model (its codec token ids those of the released checkpoint, which M* checks);
- ``model.safetensors``: ``thinker.visual.*`` and ``thinker.audio_tower.*`` (random, non-trivial:
  a missed norm or bias shows), in ``dtype``; no Thinker weights (the encoder nodes do not read them);
- a small word-level tokenizer (``tokenizer.json``) holding Qwen3-Omni's special tokens.

Everything is generated here: nothing is downloaded. Used by ``benchmarks/mstar_nodes.py`` and the
M* tests (``tests/test_mstar.py``, ``tests/test_gpu_mstar.py``).
"""

from __future__ import annotations

from pathlib import Path

import torch

# Qwen3-Omni's special tokens (the chat template's and the media placeholders).
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>", "<|audio_start|>", "<|audio_end|>", "<|audio_pad|>")
# The released checkpoint's codec ids (transformers' defaults differ; M* refuses those).
TALKER_CODEC_IDS = dict(codec_pad_id=2148, codec_bos_id=2149, codec_eos_token_id=2150, codec_nothink_id=2155,
                        codec_think_bos_id=2156, codec_think_eos_id=2157)


@torch.no_grad()
def randomize_(module: torch.nn.Module, generator: torch.Generator | None = None) -> torch.nn.Module:
    """Matrices ~ N(0, 1/fan_in); norm scales ~ N(1, 0.3); biases ~ N(0, 0.3)."""
    for name, p in module.named_parameters():
        noise = torch.randn(p.shape, generator=generator, dtype=torch.float32).to(p.device)
        if p.dim() >= 2:
            p.copy_(noise * p[0].numel() ** -0.5)
        elif name.endswith("weight"):
            p.copy_(1.0 + 0.3 * noise)
        else:
            p.copy_(0.3 * noise)
    return module


def _tokenizer(root: Path, words: int = 200) -> int:
    """A word-level tokenizer: the special tokens, then ``w0`` .. ``w{words-1}``; returns its size."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(("<unk>", *SPECIAL_TOKENS, *(f"w{i}" for i in range(words))))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", additional_special_tokens=list(SPECIAL_TOKENS))
    fast.save_pretrained(str(root))
    return len(vocab)


def write_checkpoint(root, vision_config, audio_config, dtype: torch.dtype = torch.float32, device="cpu",
                     seed: int = 0, text_overrides: dict | None = None):
    """Writes the checkpoint under ``root``; returns transformers' encoders ``(vision, audio)`` in
    float32 on ``device`` holding exactly the saved weights (rounded to ``dtype``), in eval mode.
    ``text_overrides``: overrides of the Thinker's small text config."""
    from safetensors.torch import save_file
    from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import Qwen3OmniMoeConfig
    from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import (
        Qwen3OmniMoeAudioEncoder,
        Qwen3OmniMoeVisionEncoder,
    )

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    vocab = _tokenizer(root)
    g = torch.Generator().manual_seed(seed)
    encoders, tensors = [], {}
    for cls, cfg, prefix in ((Qwen3OmniMoeVisionEncoder, vision_config, "thinker.visual."),
                             (Qwen3OmniMoeAudioEncoder, audio_config, "thinker.audio_tower.")):
        with torch.device(device):
            enc = randomize_(cls(cfg).eval(), g)
        with torch.no_grad():
            for k, v in enc.state_dict().items():
                if v.is_floating_point():
                    v.copy_(v.to(dtype))  # the module holds what the file holds
                tensors[prefix + k] = v.to(dtype if v.is_floating_point() else v.dtype).contiguous().cpu()
        encoders.append(enc)
    save_file(tensors, str(root / "model.safetensors"))
    del tensors
    text = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, head_dim=16, moe_intermediate_size=32, num_experts=4, num_experts_per_tok=2)
    text.update(text_overrides or {})
    config = Qwen3OmniMoeConfig(
        thinker_config=dict(vision_config=vision_config.to_dict(), audio_config=audio_config.to_dict(), text_config=text),
        talker_config=TALKER_CODEC_IDS)
    config.save_pretrained(str(root))
    return tuple(encoders)
