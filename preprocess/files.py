"""Files to encoder inputs: decode (``decode.py``), then preprocess with one of two backends.

* ``torch`` (default): this package's preprocessing (``image.py``, ``audio.py``) on any device.
* ``transformers``: transformers' own processors on the CPU, configured as Qwen3-Omni's: the
  reference the torch backend is tested against.

    images  ``Qwen2VLImageProcessorPil`` (the PIL/NumPy backend; the torchvision class
            ``Qwen2VLImageProcessor`` only where the PIL one cannot be imported).
    videos  each sampled frame through the same image processor with the video pixel budget, then
            grouped in pairs by ``patchify_frames`` (transformers' ``Qwen2VLVideoProcessor`` imports
            torchvision at module level, so it is not used; its patch layout is what
            ``patchify_frames`` produces, and its optional whole-video pixel cap is not applied).
    audio   ``WhisperFeatureExtractor`` called as ``Qwen3OmniMoeProcessor`` calls it; audio at other
            rates is first resampled by ``audio.resample`` (transformers has no resampler).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch

from .audio import preprocess_waveforms, resample
from .config import InputError, PreprocessConfig
from .decode import load_image, read_audio, read_video_frames
from .image import preprocess_images, preprocess_video

BACKENDS = ("torch", "transformers")


@contextlib.contextmanager
def _out_of_memory(path: Path, what: str):
    """Running out of memory while preprocessing ``path`` as an ``InputError`` naming it (host
    allocations fail as ``MemoryError`` or torch's CPU allocator's ``RuntimeError``)."""
    try:
        yield
    except (MemoryError, torch.OutOfMemoryError) as e:
        raise InputError(f"{path}: out of memory while preprocessing {what} ({type(e).__name__}); "
                         "lower max_pixels / max_frames, or downscale the file") from None
    except RuntimeError as e:
        if "can't allocate memory" not in str(e):
            raise
        raise InputError(f"{path}: out of memory while preprocessing {what}; lower max_pixels / max_frames, "
                         "or downscale the file") from None


@dataclass
class VisualInput:
    """One image or video: ``pixel_values [t*h*w, C*Tp*P*P]`` float32, its grid and metadata."""

    pixel_values: torch.Tensor
    grid_thw: tuple[int, int, int]
    meta: dict


@dataclass
class AudioInput:
    """One audio: ``input_features [num_mel_bins, T]`` float32 (valid frames only) and metadata."""

    input_features: torch.Tensor
    meta: dict

    @property
    def frames(self) -> int:
        return self.input_features.shape[1]


def image_processor_class():
    """transformers' Qwen2-VL image processor: the PIL backend, else the torchvision one."""
    try:
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        return Qwen2VLImageProcessorPil
    except ImportError:
        pass
    try:
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

        return Qwen2VLImageProcessor
    except ImportError:
        raise InputError(
            "transformers' Qwen2-VL image processor is not importable: it needs Pillow (PIL backend) "
            "or torchvision; pip install pillow") from None


def make_image_processor(cfg: PreprocessConfig, min_pixels: int, max_pixels: int):
    """A Qwen2-VL image processor with Qwen3-Omni's settings and the given pixel budget."""
    return image_processor_class()(
        # ``size`` is passed explicitly: the class-level default dict would be mutated otherwise.
        size={"shortest_edge": int(min_pixels), "longest_edge": int(max_pixels)},
        patch_size=cfg.patch_size,
        temporal_patch_size=cfg.temporal_patch_size,
        merge_size=cfg.merge_size,
        image_mean=list(cfg.image_mean),
        image_std=list(cfg.image_std),
    )


def make_feature_extractor(cfg: PreprocessConfig):
    """The Whisper log-mel extractor as Qwen3-Omni configures it (100 frames per second)."""
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(feature_size=cfg.num_mel_bins, sampling_rate=cfg.sampling_rate,
                                   hop_length=cfg.hop_length, n_fft=cfg.n_fft)


def whisper_features(fe, x) -> torch.Tensor:
    """``fe`` (a ``WhisperFeatureExtractor``) on one 16 kHz mono waveform as ``Qwen3OmniMoeProcessor``
    calls it: a batch of one, padded to its longest, no truncation, only the frames its attention
    mask marks valid. Returns ``[num_mel_bins, T]`` float32."""
    out = fe([x], sampling_rate=fe.sampling_rate, padding=True, truncation=False,
             return_attention_mask=True, return_tensors="pt")
    mask = out["attention_mask"][0].bool()
    return out["input_features"][0][:, mask].float().contiguous()


def patchify_frames(frame_patches: torch.Tensor, temporal_patch_size: int) -> torch.Tensor:
    """Groups per-frame patches into video patches.

    Args:
        frame_patches: ``[F, h*w, C, P, P]``, F a multiple of ``temporal_patch_size``, patches in
            merge-window order (what the image processor emits, one temporal slice).

    Returns:
        ``[F/Tp * h*w, C*Tp*P*P]``: for time step i, patch j holds frames ``Tp*i .. Tp*i+Tp-1`` of
        patch j stacked on the Tp axis (``[C, Tp, P, P]``), as HF's video processor lays them out.
    """
    F, n, C, P, _ = frame_patches.shape
    x = frame_patches.view(F // temporal_patch_size, temporal_patch_size, n, C, P, P)
    return x.permute(0, 2, 3, 1, 4, 5).reshape(F // temporal_patch_size * n, C * temporal_patch_size * P * P)


def transformers_video(processor, frames: list, cfg: PreprocessConfig) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Sampled video frames (PIL or uint8 arrays) through transformers' image processor ``processor``
    (made by ``make_image_processor`` with the video budget), grouped in temporal patches as HF's video
    processor lays them out (an odd count repeats the last frame). Returns ``(pixel_values, grid)``."""
    out = processor(images=list(frames), return_tensors="pt")
    pixel_values, (_, h, w) = out["pixel_values"].float(), out["image_grid_thw"][0].tolist()
    C, Tp, P = cfg.in_channels, cfg.temporal_patch_size, cfg.patch_size
    # Each frame's patches carry the frame Tp times; keep one slice: [F, h*w, C, P, P].
    per_frame = pixel_values.view(len(frames), h * w, C, Tp, P, P)[:, :, :, 0]
    if pad := -len(frames) % Tp:
        per_frame = torch.cat([per_frame, per_frame[-1:].expand(pad, -1, -1, -1, -1)])
    return patchify_frames(per_frame, Tp).contiguous(), (per_frame.shape[0] // Tp, h, w)


class Preprocessor:
    """Turns files into encoder inputs (see the module docstring).

    Args:
        cfg: the preprocessing settings.
        backend: ``torch`` (this package, on ``device``) or ``transformers`` (the CPU reference).
        device: where the torch backend works and its outputs live (default CPU).
    """

    def __init__(self, cfg: PreprocessConfig, backend: str = "torch", device=None):
        if backend not in BACKENDS:
            raise ValueError(f"backend {backend!r}: choose one of {', '.join(BACKENDS)}")
        self.cfg, self.backend = cfg, backend
        self.device = torch.device("cpu" if device is None or backend == "transformers" else device)
        self._image = self._video = self._audio = None

    @property
    def image_processor(self):
        if self._image is None:
            self._image = make_image_processor(self.cfg, self.cfg.min_pixels, self.cfg.max_pixels)
        return self._image

    @property
    def video_frame_processor(self):
        if self._video is None:
            self._video = make_image_processor(self.cfg, self.cfg.video_min_pixels, self.cfg.video_max_pixels)
        return self._video

    @property
    def feature_extractor(self):
        if self._audio is None:
            self._audio = make_feature_extractor(self.cfg)
        return self._audio

    def _hf(self, processor, frames, path: Path) -> tuple[torch.Tensor, list[list[int]]]:
        try:
            out = processor(images=frames, return_tensors="pt")
        except ValueError as e:  # e.g. an aspect ratio above 200
            raise InputError(f"{path}: the image processor refused it ({e})") from None
        return out["pixel_values"].float(), out["image_grid_thw"].tolist()

    def image(self, path) -> VisualInput:
        """One image -> ``pixel_values [h*w, C*Tp*P*P]`` and grid ``(1, h, w)``."""
        path = Path(path)
        im = load_image(path, self.cfg)
        if self.backend == "transformers":
            pixel_values, grids = self._hf(self.image_processor, [im], path)
            grid = tuple(grids[0])
        else:
            with _out_of_memory(path, f"a {im.width}x{im.height} (width x height) image"):
                try:
                    out = preprocess_images([im], self.cfg, device=self.device)
                except ValueError as e:
                    raise InputError(f"{path}: {e}") from None
            pixel_values, grid = out.pixel_values, out.grid_thw[0]
        P = self.cfg.patch_size
        meta = {"source": str(path), "size": [im.height, im.width], "resized": [grid[1] * P, grid[2] * P]}
        return VisualInput(pixel_values, grid, meta)

    def video(self, path) -> VisualInput:
        """One video -> ``pixel_values [t*h*w, C*Tp*P*P]`` and grid ``(ceil(frames/Tp), h, w)``."""
        path = Path(path)
        cfg = self.cfg
        frames, indices, seconds = read_video_frames(path, cfg)
        if self.backend == "transformers":
            try:
                pixel_values, grid = transformers_video(self.video_frame_processor, frames, cfg)
            except ValueError as e:  # e.g. an aspect ratio above 200
                raise InputError(f"{path}: the image processor refused it ({e})") from None
        else:
            with _out_of_memory(path, f"{len(frames)} frames of {frames[0].width}x{frames[0].height} (width x height)"):
                try:  # the frames were sampled while decoding (fps=None keeps them)
                    out = preprocess_video(frames, cfg, device=self.device)
                except ValueError as e:
                    raise InputError(f"{path}: {e}") from None
            pixel_values, grid = out.pixel_values, out.grid_thw[0]
        P = cfg.patch_size
        meta = {"source": str(path), "frames": len(frames), "frame_indices": indices,
                "size": [frames[0].height, frames[0].width], "resized": [grid[1] * P, grid[2] * P]}
        if seconds is not None:
            meta["seconds"] = round(seconds, 6)
        return VisualInput(pixel_values, grid, meta)

    def audio(self, path) -> AudioInput:
        """One audio file -> ``input_features [num_mel_bins, T]`` (valid frames only, T = samples // 160
        at 16 kHz)."""
        path = Path(path)
        cfg = self.cfg
        x, rate, channels = read_audio(path, cfg)
        if self.backend == "transformers":
            wave = resample(torch.from_numpy(x).mean(0), rate, cfg.sampling_rate)
            if wave.shape[0] < cfg.n_fft:
                raise InputError(f"{path}: {wave.shape[0]} samples at {cfg.sampling_rate} Hz is too short; "
                                 f"an audio needs at least {cfg.n_fft}")
            features = whisper_features(self.feature_extractor, wave.numpy())
        else:
            with _out_of_memory(path, f"{x.shape[1] / rate:.1f} s of audio"):
                try:
                    features = preprocess_waveforms([x], rate, cfg, device=self.device).input_features
                except ValueError as e:
                    if "field 'length'" in str(e) and x.shape[1] / rate <= cfg.audio_seconds_limit:
                        raise InputError(f"{path}: too short: {str(e).split(': ', 1)[1]}") from None
                    raise InputError(f"{path}: {e}") from None
        seconds = x.shape[1] / rate
        meta = {"source": str(path), "sample_rate": rate, "channels": channels, "seconds": round(seconds, 6)}
        return AudioInput(features, meta)
