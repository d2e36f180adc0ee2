"""Raw media of many requests to encoder inputs in one pass: one host-to-device copy per dtype,
images grouped by size across requests, one batched log-mel for every audio.

Calling ``preprocess_images`` / ``preprocess_video`` / ``preprocess_waveforms`` once per request
launches one group of kernels per request; ``preprocess_many`` plans every request on the host
first (validation, sizes, frame sampling, the audio layout), moves all host inputs into one device
buffer per dtype (``staging.Stager``: pageable copies, or one pinned copy with ``pin_host_inputs``),
then runs:

* images: per distinct (source size, target size) across all requests, one batched resize and one
  patch-writing kernel (``image.ImageBatch``); a request's ``pixel_values`` is a view of its group's
  rows, or one concatenation when its images fall in several groups;
* videos: per video, one batched resize of its kept frames and one patch-writing kernel;
* audio: the log-mel of every clip of every request in one pass (``audio.log_mel_frames``); clips
  not at 16 kHz mono are first resampled / averaged on the device, one clip at a time. A request's
  ``input_features`` is a column slice of the batch's ``[mel, sum T]``.

Nothing waits for the device. ``omnienc.runtime.preprocess_requests`` wraps this into requests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .audio import AudioInputs, check_waveforms, stage_waveforms
from .config import PreprocessConfig
from .image import (
    ImageBatch, VideoPlan, VisionInputs, _image_budget, _image_list, _plan_images, _resolve_device, plan_video,
)
from .staging import Stager


@dataclass(frozen=True)
class RawImages:
    """A request of images (PIL, or uint8 ``[H, W, 3]`` tensors/arrays), as ``from_images`` takes."""

    images: object
    min_pixels: int | None = None
    max_pixels: int | None = None


@dataclass(frozen=True)
class RawVideo:
    """A request of one video (uint8 ``[T, H, W, 3]`` or a list of frames), as ``from_video`` takes."""

    frames: object
    fps: float | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None


@dataclass(frozen=True)
class RawAudio:
    """A request of waveforms (float ``[samples]`` or ``[channels, samples]``), as ``from_waveforms``."""

    waveforms: object
    sampling_rate: int | Sequence[int] = 16000


@dataclass(frozen=True)
class ImagePlan:
    """A request of images, validated: the images, their sizes and their resize targets (host ints)."""

    images: list
    sizes: list
    targets: list


@dataclass(frozen=True)
class AudioPlan:
    """A request of waveforms, validated: the waveforms as tensors and their sampling rates."""

    waves: list
    rates: list


ItemPlan = ImagePlan | VideoPlan | AudioPlan  # one planned item of ``plan_items``


def _inputs_of(items) -> list:
    out = []
    for it in items:
        if isinstance(it, RawImages):
            out += _image_list(it.images)
        elif isinstance(it, RawVideo):
            out += [it.frames] if isinstance(it.frames, torch.Tensor) else list(it.frames)
        elif isinstance(it, RawAudio):
            w = it.waveforms
            out += [w] if isinstance(w, torch.Tensor) else list(w) if isinstance(w, Sequence) else []
    return out


def preprocess_many(items: Sequence, config: PreprocessConfig | None = None, *, device=None,
                    graphs: bool | None = None) -> list[VisionInputs | AudioInputs]:
    """Preprocesses many requests' raw media at once (see the module docstring).

    Args:
        items: ``RawImages``, ``RawVideo`` and ``RawAudio`` in any order.
        device: where the work runs and the outputs live (default: the inputs' accelerator, else CPU).
        graphs: on CUDA, replay a CUDA graph for a layout (every item's kind and sizes) seen before
            (``graphs.PreprocessGraphs``: captured at its second sighting, at most 16 per device);
            False: always launch the kernels one by one; None (default): ``config.graphs``.

    Returns:
        One ``VisionInputs`` / ``AudioInputs`` per item, in order, equal to what the per-request
        functions return for it (new tensors, owned by the caller, also after a graph replay).

    Raises:
        ValueError: ``item k: ...`` naming the item and, inside it, the image, frame or waveform and
            field, before any work.
    """
    cfg = config or PreprocessConfig()
    plans = plan_items(items, cfg)
    device = _resolve_device(device, _inputs_of(items))
    if device.type == "cuda":
        from . import graphs as g

        if cfg.graphs if graphs is None else graphs:
            return g.graphs_for(device).run(plans, cfg)
    staged = Staged(plans, cfg, device)
    staged.send()
    return staged.finish()


def plan_items(items: Sequence, cfg: PreprocessConfig) -> list[ItemPlan]:
    """Validates every item and plans it on the host (sizes, frame sampling); no pixel or sample
    is read except host waveforms' finiteness check."""
    if not isinstance(items, Sequence) or len(items) == 0:
        raise ValueError("items: expected a non-empty list of RawImages, RawVideo or RawAudio")
    plans: list = []
    for k, it in enumerate(items):
        try:
            if isinstance(it, RawImages):
                lo, hi = _image_budget(cfg, it.min_pixels, it.max_pixels)
                images = _image_list(it.images)
                plans.append(ImagePlan(images, *_plan_images(images, cfg, lo, hi)))
            elif isinstance(it, RawVideo):
                plans.append(plan_video(it.frames, cfg, it.fps, it.min_pixels, it.max_pixels))
            elif isinstance(it, RawAudio):
                plans.append(AudioPlan(*check_waveforms(it.waveforms, it.sampling_rate, cfg)))
            else:
                raise ValueError(f"expected RawImages, RawVideo or RawAudio, got {type(it).__name__}")
        except ValueError as e:
            raise ValueError(f"item {k}: {e}") from None
    return plans


def layout_key(plans: list[ItemPlan]) -> tuple:
    """What the device work of ``plans`` depends on, besides the pixel and sample values: per item
    its kind and sizes (images: source and target sizes; video: kept frames, sizes; audio: each
    waveform's shape, dtype and rate). Equal keys run the same kernels on the same shapes."""
    key = []
    for p in plans:
        if isinstance(p, ImagePlan):
            key.append(("image", tuple(p.sizes), tuple(p.targets)))
        elif isinstance(p, VideoPlan):
            key.append(("video", tuple(p.padded), p.size, p.target))
        else:
            key.append(("audio", tuple((tuple(x.shape), x.dtype) for x in p.waves), tuple(p.rates)))
    return tuple(key)


class Staged:
    """The inputs of planned items reserved in three stagers (uint8 pixels, float32 waveforms, int64
    indices); ``send()`` copies them to the device, ``finish()`` runs the device work and returns
    the per-item outputs. A CUDA graph captures ``finish`` once; a replay sends new inputs into
    the captured buffers (``send(into=...)``)."""

    def __init__(self, plans: list[ItemPlan], cfg: PreprocessConfig, device: torch.device):
        self.plans, self.cfg, self.device = plans, cfg, device
        self.u8, self.f32, self.i64 = (Stager(t, device, cfg.pin_host_inputs)
                                       for t in (torch.uint8, torch.float32, torch.int64))
        self.images = ImageBatch(cfg, device)
        for p in plans:
            if isinstance(p, ImagePlan):
                self.images.add(p.images, p.sizes, p.targets)
            elif isinstance(p, VideoPlan):
                p.stage(self.u8)
        self.images.stage(self.u8)
        audio = [p for p in plans if isinstance(p, AudioPlan)]
        self._audio = None
        if audio:
            xs = [x for p in audio for x in p.waves]
            rates = [r for p in audio for r in p.rates]
            self._audio = stage_waveforms(xs, rates, cfg, device, self.f32, self.i64)

    def send(self, u8: torch.Tensor | None = None, f32: torch.Tensor | None = None, indices: bool = True) -> None:
        """Copies the inputs to the device (into ``u8``/``f32`` if given); ``indices=False`` leaves
        the int64 indices out (a graph replay keeps the ones it captured: they depend only on the
        layout)."""
        self.u8.send(u8)
        self.f32.send(f32)
        if indices:
            self.i64.send()

    def finish(self) -> list[VisionInputs | AudioInputs]:
        cfg, device = self.cfg, self.device
        image_out = iter(self.images.finish(self.u8) if self.images.lists else [])
        feats, lens = (self._audio[0](), self._audio[1]) if self._audio else (None, None)
        out, col, clip = [], 0, 0
        for p in self.plans:
            if isinstance(p, ImagePlan):
                px, grids = next(image_out)
                out.append(VisionInputs(px, grids, p.sizes))
            elif isinstance(p, VideoPlan):
                out.append(VisionInputs(p.finish(self.u8, cfg, device), [p.grid], [p.size], p.keep))
            else:
                n = len(p.waves)
                mine = lens[clip : clip + n]
                out.append(AudioInputs(feats[:, col : col + sum(mine)], mine, p.rates))
                col, clip = col + sum(mine), clip + n
        return out


__all__ = ["AudioPlan", "ImagePlan", "ItemPlan", "RawAudio", "RawImages", "RawVideo", "Staged", "layout_key",
           "plan_items", "preprocess_many"]
