"""Preprocessing settings: Qwen3-Omni's defaults, or read from a checkpoint or encoder configs.

Defaults (Qwen3-Omni's, as its processor configures transformers' processors):

    images  bicubic resize to multiples of ``patch_size * merge_size`` (``smart_resize``), rescale by
            1/255, normalize with mean = std = 0.5; pixel floor 3136; the pixel cap is an engine cap,
            not the checkpoint's 12845056: 1280 output tokens per image (1280 * 32 * 32 = 1310720
            pixels for patch 16, about 1145 x 1145).
    videos  per frame 128 to 768 output tokens' worth of pixels (``128 * 32 * 32`` to
            ``768 * 32 * 32`` for patch 16), the budget Qwen3-Omni's processor passes to its video
            processor; frames sampled at 2 per second (qwen-omni-utils' rate), at least 4 and at most
            768 per video; frames grouped in temporal pairs.
    audio   Whisper log-mel features: 16 kHz, window 400 (25 ms), hop 160 (10 ms), ``num_mel_bins``
            mel bands (128), 0-8000 Hz.

Pixel budgets given in output tokens scale with the square of ``patch_size * merge_size``.

Limits (``*_limit``; raise them in the config where a machine holds more): inputs beyond them are
refused with a ``ValueError`` naming the item and field before any work, and files whose header
claims more are refused before decoding.

    source_pixel_limit  pixels of one image or video frame as decoded, 89,478,485 (Pillow's
                        decompression-bomb threshold: a quarter GiB of RGB; resizing takes 12
                        bytes per pixel more).
    pixel_limit         the most ``max_pixels`` and ``video_max_pixels`` may be: 8192 x 8192
                        (262,144 patches of 16 px, the runtime grid's largest bucket size).
    frame_limit         the most ``max_frames`` may be: 8192.
    video_pixel_limit   a video's kept frames times their pixels, as decoded or resized, whichever
                        is more: 768 frames of 3840 x 2160 (4K UHD at Qwen's most frames).
    audio_seconds_limit one waveform's duration: 3600 s.
"""

from __future__ import annotations

import json
import math
import numbers
import operator
from dataclasses import asdict, dataclass, field
from pathlib import Path

IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)
MIN_PIXELS = 3136
MAX_IMAGE_TOKENS = 1280
VIDEO_MIN_TOKENS = 128
VIDEO_MAX_TOKENS = 768
VIDEO_FPS = 2.0  # frames sampled per second of video (qwen-omni-utils' rate)
VIDEO_MIN_FRAMES = 4  # qwen-omni-utils' floor on sampled frames (when the video has that many)
MAX_FRAMES = 768  # qwen-omni-utils' and HF's Qwen2-VL video processor's cap
SAMPLING_RATE = 16000
HOP_LENGTH = 160
N_FFT = 400
MAX_ASPECT_RATIO = 200  # smart_resize refuses longer sides more than this many times the shorter
SOURCE_PIXEL_LIMIT = 89_478_485  # Pillow's Image.MAX_IMAGE_PIXELS
PIXEL_LIMIT = 8192 * 8192
FRAME_LIMIT = 8192
VIDEO_PIXEL_LIMIT = 768 * 3840 * 2160
AUDIO_SECONDS_LIMIT = 3600.0


class InputError(ValueError):
    """An input (file or in-memory item) that cannot be read or preprocessed; the message names it."""


class PreprocessConfigError(ValueError):
    """Inconsistent preprocessing settings; the message names the setting."""


def _positive_int(name: str, value) -> int:
    """``value`` as an int >= 1 (ints and integer-valued numbers; not bools, strings or fractions)."""
    if isinstance(value, bool):
        raise PreprocessConfigError(f"{name} is {value!r}; it must be a positive integer")
    try:
        v = operator.index(value)
    except TypeError:
        if not (isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer()):
            raise PreprocessConfigError(f"{name} is {value!r}; it must be a positive integer") from None
        v = int(value)
    if v < 1:
        raise PreprocessConfigError(f"{name} is {v}; it must be a positive integer")
    return v


@dataclass
class PreprocessConfig:
    """How raw media become encoder inputs. Defaults are Qwen3-Omni's (see the module docstring).

    Attributes:
        patch_size, temporal_patch_size, merge_size, in_channels: the vision encoder's patching.
        image_mean, image_std: per-channel normalization after rescaling to [0, 1].
        min_pixels, max_pixels: image pixel budget after resizing (None: 1280 output tokens).
        video_min_pixels, video_max_pixels: per-frame pixel budget of videos (None: 128 / 768 tokens).
        video_fps: frames sampled per second of a timed video; 0 keeps every frame.
        video_min_frames: a timed video yields at least this many frames when it has them.
        max_frames: at most this many frames per video (uniformly subsampled).
        num_mel_bins: mel bands of the audio features.
        sampling_rate, hop_length, n_fft: Whisper's STFT (fixed: the audio encoder was trained on them).
        source_pixel_limit, pixel_limit, frame_limit, video_pixel_limit, audio_seconds_limit: what
            preprocessing accepts at most (see the module docstring).
        graphs: on CUDA, replay a CUDA graph of a layout seen before (``preprocess.graphs``): ~10
            Python launches per request become one replay.
        pin_host_inputs: send host inputs through one pinned buffer and one asynchronous copy,
            which never waits for the GPU, instead of pageable copies straight from the caller's
            arrays, which measured faster on an idle GPU (``staging``; docs/BENCHMARKS.md).
    """

    patch_size: int = 16
    temporal_patch_size: int = 2
    merge_size: int = 2
    in_channels: int = 3
    image_mean: tuple[float, ...] = IMAGE_MEAN
    image_std: tuple[float, ...] = IMAGE_STD
    min_pixels: int = MIN_PIXELS
    max_pixels: int | None = None
    video_min_pixels: int | None = None
    video_max_pixels: int | None = None
    video_fps: float = VIDEO_FPS
    video_min_frames: int = VIDEO_MIN_FRAMES
    max_frames: int = MAX_FRAMES
    num_mel_bins: int = 128
    source_pixel_limit: int = SOURCE_PIXEL_LIMIT
    pixel_limit: int = PIXEL_LIMIT
    frame_limit: int = FRAME_LIMIT
    video_pixel_limit: int = VIDEO_PIXEL_LIMIT
    audio_seconds_limit: float = AUDIO_SECONDS_LIMIT
    graphs: bool = True
    pin_host_inputs: bool = False
    sampling_rate: int = field(default=SAMPLING_RATE, init=False)
    hop_length: int = field(default=HOP_LENGTH, init=False)
    n_fft: int = field(default=N_FFT, init=False)

    def __post_init__(self):
        tokens_px = self.factor**2  # pixels of one output token
        if self.max_pixels is None:
            self.max_pixels = MAX_IMAGE_TOKENS * tokens_px
        if self.video_min_pixels is None:
            self.video_min_pixels = VIDEO_MIN_TOKENS * tokens_px
        if self.video_max_pixels is None:
            self.video_max_pixels = VIDEO_MAX_TOKENS * tokens_px
        self.image_mean, self.image_std = tuple(self.image_mean), tuple(self.image_std)
        for name in ("patch_size", "temporal_patch_size", "merge_size", "in_channels", "min_pixels", "max_pixels",
                     "video_min_pixels", "video_max_pixels", "video_min_frames", "max_frames", "num_mel_bins",
                     "source_pixel_limit", "pixel_limit", "frame_limit", "video_pixel_limit"):
            setattr(self, name, _positive_int(name, getattr(self, name)))
        for name in ("video_fps", "audio_seconds_limit"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise PreprocessConfigError(f"{name} is {value!r}; it must be a finite number")
            setattr(self, name, float(value))
        if self.in_channels != 3:
            raise PreprocessConfigError(
                f"the vision encoder takes {self.in_channels} channels; preprocessing makes RGB (3)")
        if len(self.image_mean) != 3 or len(self.image_std) != 3:
            raise PreprocessConfigError(
                f"image_mean and image_std need 3 values, got {self.image_mean}, {self.image_std}")
        if not all(s > 0 for s in self.image_std):
            raise PreprocessConfigError(f"image_std must be positive, got {self.image_std}")
        if self.min_pixels > self.max_pixels:
            raise PreprocessConfigError(f"min_pixels {self.min_pixels} is larger than max_pixels {self.max_pixels}")
        if self.video_min_pixels > self.video_max_pixels:
            raise PreprocessConfigError(
                f"video_min_pixels {self.video_min_pixels} is larger than video_max_pixels {self.video_max_pixels}")
        for name in ("graphs", "pin_host_inputs"):
            if not isinstance(getattr(self, name), bool):
                raise PreprocessConfigError(f"{name} is {getattr(self, name)!r}; it must be True or False")
        if not self.video_fps >= 0:
            raise PreprocessConfigError(f"video_fps is {self.video_fps}; pass 0 (every frame) or a positive rate")
        if not self.audio_seconds_limit > 0:
            raise PreprocessConfigError(f"audio_seconds_limit is {self.audio_seconds_limit}; it must be > 0")
        for name, limit in (("max_pixels", "pixel_limit"), ("video_max_pixels", "pixel_limit"),
                            ("max_frames", "frame_limit")):
            if getattr(self, name) > getattr(self, limit):
                raise PreprocessConfigError(
                    f"{name} {getattr(self, name)} is above {limit} {getattr(self, limit)}, the most preprocessing "
                    f"accepts; lower {name}, or raise {limit} where a machine holds more")

    @property
    def factor(self) -> int:
        """Resized sides are multiples of this (patch_size * merge_size)."""
        return self.patch_size * self.merge_size

    @property
    def patch_dim(self) -> int:
        """Values per flattened patch: C * Tp * P * P."""
        return self.in_channels * self.temporal_patch_size * self.patch_size**2

    @classmethod
    def from_configs(cls, vision=None, audio=None, **overrides) -> PreprocessConfig:
        """Sizes from encoder configs (transformers config objects or their dicts; either may be None);
        ``overrides`` that are not None win."""
        kw: dict = {}
        vision = vision.to_dict() if hasattr(vision, "to_dict") else vision
        audio = audio.to_dict() if hasattr(audio, "to_dict") else audio
        if vision is not None:
            for ours, theirs in (("patch_size", "patch_size"), ("temporal_patch_size", "temporal_patch_size"),
                                 ("merge_size", "spatial_merge_size"), ("in_channels", "in_channels")):
                if theirs in vision:
                    kw[ours] = int(vision[theirs])
        if audio is not None and "num_mel_bins" in audio:
            kw["num_mel_bins"] = int(audio["num_mel_bins"])
        kw.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kw)

    @classmethod
    def from_checkpoint(cls, checkpoint_dir, vision: bool = True, audio: bool = True, **overrides) -> PreprocessConfig:
        """Reads the sizes from ``config.json``'s vision config (if ``vision``) and audio config (if
        ``audio``), and the normalization and pixel floor from ``preprocessor_config.json`` if present;
        ``overrides`` that are not None win.

        Raises:
            CheckpointError: no readable ``config.json``, a requested sub-config missing, or a
                ``preprocessor_config.json`` that contradicts ``config.json``.
            PreprocessConfigError: inconsistent values (the message says which).
        """
        from omnienc.encoders.weights import CheckpointError, read_thinker_subconfig

        root = Path(checkpoint_dir)
        vision_cfg = read_thinker_subconfig(root, "vision_config") if vision else None
        audio_cfg = read_thinker_subconfig(root, "audio_config") if audio else None
        sizes = cls.from_configs(vision_cfg, audio_cfg)
        kw = {k: getattr(sizes, k) for k in ("patch_size", "temporal_patch_size", "merge_size", "in_channels",
                                            "num_mel_bins")}
        pre_path = root / "preprocessor_config.json"
        if pre_path.is_file():
            try:
                pre = json.loads(pre_path.read_text())
            except json.JSONDecodeError as e:
                raise CheckpointError(f"{pre_path}: not valid JSON ({e})") from None
            for key in ("patch_size", "temporal_patch_size", "merge_size"):
                if vision_cfg is not None and key in pre and int(pre[key]) != kw[key]:
                    raise CheckpointError(
                        f"{pre_path}: {key} is {pre[key]} but config.json's vision_config says {kw[key]}")
            for key in ("image_mean", "image_std", "min_pixels"):
                if key in pre:
                    kw[key] = pre[key]
            if "min_pixels" not in pre and isinstance(pre.get("size"), dict) and "shortest_edge" in pre["size"]:
                kw["min_pixels"] = pre["size"]["shortest_edge"]  # newer configs keep the budget in size
        kw.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kw)

    def to_dict(self) -> dict:
        return asdict(self)
