"""Drop omnienc's encoders into a transformers Qwen3-Omni Thinker.

``Qwen3OmniMoeThinkerForConditionalGeneration`` (transformers 5.17) uses its encoders only through
``get_image_features`` / ``get_video_features`` / ``get_audio_features``:

    thinker.visual(pixel_values, grid_thw=grid_thw, **kwargs)
        pixel_values: [N, C*T*P*P], already cast with ``.type(thinker.visual.dtype)``;
        grid_thw: [n, 3] int64. Must return an object with ``.pooler_output`` [N/4, out_hidden]
        (the Thinker overwrites this attribute with its per-item split) and ``.deepstack_features``
        (list of [N/4, out_hidden]). The Thinker also reads ``thinker.visual.dtype`` and
        ``thinker.visual.spatial_merge_size``.
    thinker.audio_tower(input_features, feature_lens=feature_lens, return_dict=True, **kwargs)
        input_features: [num_mel_bins, sum T] (valid frames of all audios, not cast);
        feature_lens: [B] int64. Must return an object with ``.last_hidden_state`` [sum L, output_dim].

transformers 5.24 keeps the same calls but moves the encoders to ``thinker.model.visual`` /
``thinker.model.audio_tower``; ``encoder_holder`` finds them in either place (the checkpoint's keys
stay ``thinker.visual.*`` / ``thinker.audio_tower.*``).

``**kwargs`` is whatever reached ``Thinker.forward`` (``output_attentions``, precomputed layout
tensors such as ``cu_seqlens``, ...). The adapters ignore it: the native encoders derive their layout
from ``grid_thw`` / ``feature_lens`` alone and expose no per-layer outputs.

Typical use, from an HF Thinker whose encoder weights are already loaded::

    native_vis = VisionEncoder(thinker.config.vision_config)
    native_aud = AudioEncoder(thinker.config.audio_config)
    swap_thinker_encoders(thinker, vision=native_vis, audio=native_aud, copy_weights=True)

After a swap the encoders' ``state_dict`` keys read ``visual.native.*`` / ``audio_tower.native.*``;
load checkpoints into the native modules with ``load_hf_weights`` (prefix ``thinker.visual.`` etc.),
not through the Thinker.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import BaseModelOutputWithDeepstackFeatures


def _param_dtype_device(module: nn.Module) -> tuple[torch.dtype, torch.device]:
    """dtype and device of the module's first floating-point parameter (what HF's ``.dtype`` reports)."""
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype, p.device
    raise ValueError(f"{type(module).__name__} has no floating-point parameters")


class _Adapter(nn.Module):
    def __init__(self, native: nn.Module):
        super().__init__()
        self.native = native

    @property
    def config(self):
        return self.native.config

    @property
    def dtype(self) -> torch.dtype:
        return _param_dtype_device(self.native)[0]

    @property
    def device(self) -> torch.device:
        return _param_dtype_device(self.native)[1]


class HFVisionAdapter(_Adapter):
    """Presents a native ``VisionEncoder`` as ``thinker.visual``.

    ``native(pixel_values, grid_thw)`` must return ``(embeds [N/4, out_hidden], deepstack list)``.
    """

    def __init__(self, native: nn.Module):
        super().__init__(native)
        self.spatial_merge_size = int(native.config.spatial_merge_size)

    def forward(
        self, hidden_states: torch.Tensor, grid_thw: torch.Tensor, return_dict: bool = True, **kwargs
    ) -> BaseModelOutputWithDeepstackFeatures | tuple:
        embeds, deepstack = self.native(hidden_states, grid_thw)
        # last_hidden_state (HF: pre-merger patch states) is not read by the Thinker; left None.
        out = BaseModelOutputWithDeepstackFeatures(pooler_output=embeds, deepstack_features=list(deepstack))
        return out if return_dict else out.to_tuple()


class HFAudioAdapter(_Adapter):
    """Presents a native ``AudioEncoder`` as ``thinker.audio_tower``.

    ``native(input_features, feature_lens)`` must return ``[sum L, output_dim]``. Features are cast to
    the encoder's dtype here (HF casts inside its audio tower; the Thinker does not).
    """

    def forward(
        self, input_features: torch.Tensor, feature_lens: torch.Tensor, return_dict: bool = True, **kwargs
    ) -> BaseModelOutputWithPooling | tuple:
        embeds = self.native(input_features.to(self.dtype), feature_lens)
        out = BaseModelOutputWithPooling(last_hidden_state=embeds)
        return out if return_dict else out.to_tuple()


def encoder_holder(model: nn.Module) -> nn.Module:
    """The module whose ``visual`` and ``audio_tower`` attributes are the Thinker's encoders.

    transformers up to 5.2x keeps them on the Thinker itself; later versions on ``thinker.model``.
    ``model`` may be the Thinker or a model holding one as ``.thinker``.
    """
    thinker = getattr(model, "thinker", model)
    for holder in (thinker, getattr(thinker, "model", None)):
        if holder is not None and "visual" in holder._modules and "audio_tower" in holder._modules:
            return holder
    raise ValueError(f"{type(thinker).__name__} has no visual/audio_tower encoders (on itself or on .model)")


def swap_thinker_encoders(
    model: nn.Module,
    vision: nn.Module | None = None,
    audio: nn.Module | None = None,
    copy_weights: bool = False,
) -> dict[str, nn.Module]:
    """Replaces ``thinker.visual`` / ``thinker.audio_tower`` with adapters around native encoders.

    Args:
        model: a ``Qwen3OmniMoeThinkerForConditionalGeneration``, or a model holding one as ``.thinker``.
        vision, audio: native encoders (either may be None to keep that encoder), already on the
            Thinker's device and dtype.
        copy_weights: first load each native encoder from the module it replaces
            (``load_hf_weights(native, old.state_dict())``).

    Returns:
        The replaced modules, keyed ``"visual"`` / ``"audio_tower"`` (drop them to free their memory).
    """
    thinker = encoder_holder(model)
    replaced = {}
    for name, native, adapter_cls in (("visual", vision, HFVisionAdapter), ("audio_tower", audio, HFAudioAdapter)):
        if native is None:
            continue
        old = getattr(thinker, name)
        if copy_weights:
            if isinstance(old, _Adapter):
                raise ValueError(f"thinker.{name} is already an omnienc adapter; copy_weights needs the HF module")
            from omnienc.encoders import load_hf_weights

            load_hf_weights(native, old.state_dict())
        setattr(thinker, name, adapter_cls(native))
        replaced[name] = old
    return replaced
