"""Preprocessing of images, videos and audio into the encoders' inputs, as Qwen3-Omni does it.

Everything goes through transformers' own processors, configured as Qwen3-Omni's:

    images  ``Qwen2VLImageProcessorPil`` (the PIL/NumPy backend; the torchvision class
            ``Qwen2VLImageProcessor`` is used only where the PIL one cannot be imported): bicubic
            ``smart_resize`` to multiples of ``patch_size * merge_size``, rescale 1/255, normalize
            with mean = std = 0.5, then flattened ``[C, Tp, P, P]`` patches in merge-window order; a
            still image is its frame repeated ``Tp`` times (grid t = 1).
    videos  frames (a GIF or other animated image, a folder of frames, or an mp4 etc. when ``av`` is
            installed), sampled at ``video_fps`` (2, as qwen-omni-utils), each frame through the same image processor with the
            video pixel budget, then grouped in pairs: patch ``[C, Tp, P, P]`` holds frames 2i and 2i+1
            (grid t = ceil(frames / 2); an odd count repeats the last frame, as HF's video processor
            does). transformers' ``Qwen2VLVideoProcessor`` imports torchvision at module level, so it is
            not used; its patch layout (t, merged row, merged column, 2x2 block, C, Tp, P, P) is what
            ``patchify_frames`` produces. The numerical difference is the resize kernel (torchvision
            vs PIL bicubic on each frame); its optional whole-video pixel cap (``cap_pixels_per_frame``)
            is not applied, ``video_max_pixels`` caps each frame.
    audio   ``WhisperFeatureExtractor(feature_size=num_mel_bins, sampling_rate=16000, hop_length=160,
            n_fft=400)``, called as ``Qwen3OmniMoeProcessor`` calls it (``padding=True``,
            ``truncation=False``, ``return_attention_mask=True``): no 30 s padding, and only the
            frames the attention mask marks valid are kept: ``[num_mel_bins, len // 160]``. WAV files are
            read with the stdlib ``wave`` module (8/16/24/32-bit PCM), channels averaged to mono, and
            resampled to 16 kHz by band-limited FFT resampling (``resample``).

Sizes (patch, temporal patch, merge, mel bins, channels) come from the checkpoint's ``config.json``;
``image_mean``, ``image_std`` and ``min_pixels`` from its ``preprocessor_config.json`` when present.
``max_pixels`` is an engine cap, not the checkpoint's 12845056: by default 1280 output tokens per
image (1280 * 32 * 32 = 1310720 pixels for patch 16, about 1145 x 1145). Per video frame the budget is
the one Qwen3-Omni's processor passes to its video processor: 128 to 768 output tokens'
worth of pixels (``128 * 32 * 32`` to ``768 * 32 * 32`` for patch 16).
"""

from __future__ import annotations

import json
import math
import wave
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

# Qwen3-Omni's values (see the module docstring); pixel budgets in output tokens scale with the
# square of patch_size * merge_size.
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)
MIN_PIXELS = 3136
MAX_IMAGE_TOKENS = 1280
VIDEO_MIN_TOKENS = 128
VIDEO_MAX_TOKENS = 768
VIDEO_FPS = 2.0  # frames sampled per second of a timed video (qwen-omni-utils' rate)
MAX_FRAMES = 768  # HF's Qwen2-VL video processor's max_frames
GIF_DEFAULT_FRAME_MS = 100  # what browsers show for a GIF frame without a duration
SAMPLING_RATE = 16000
HOP_LENGTH = 160
N_FFT = 400
FRAME_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")


class InputError(ValueError):
    """An input file that cannot be read or preprocessed; the message names the file."""


class PreprocessConfigError(ValueError):
    """Inconsistent preprocessing settings; the message names the setting."""


@dataclass
class PreprocessConfig:
    """How inputs become encoder inputs. Build it with :meth:`from_checkpoint`.

    Attributes:
        patch_size, temporal_patch_size, merge_size, in_channels: the vision encoder's patching.
        image_mean, image_std: per-channel normalization after rescaling to [0, 1].
        min_pixels, max_pixels: image pixel budget after resizing.
        video_min_pixels, video_max_pixels: per-frame pixel budget of videos.
        video_fps: frames sampled per second of a video with timing (GIF, mp4); 0 keeps every frame.
        max_frames: at most this many frames per video (uniformly subsampled).
        num_mel_bins: mel bins of the audio features.
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
    max_frames: int = MAX_FRAMES
    num_mel_bins: int = 128
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
        for name in ("patch_size", "temporal_patch_size", "merge_size", "min_pixels", "max_pixels",
                     "video_min_pixels", "video_max_pixels", "max_frames", "num_mel_bins"):
            if int(getattr(self, name)) < 1:
                raise PreprocessConfigError(f"{name} is {getattr(self, name)}; it must be a positive integer")
        if self.in_channels != 3:
            raise PreprocessConfigError(
                f"the vision encoder takes {self.in_channels} channels; preprocessing makes RGB (3)")
        if len(self.image_mean) != 3 or len(self.image_std) != 3:
            raise PreprocessConfigError(
                f"image_mean and image_std need 3 values, got {self.image_mean}, {self.image_std}")
        if self.min_pixels > self.max_pixels:
            raise PreprocessConfigError(f"min_pixels {self.min_pixels} is larger than max_pixels {self.max_pixels}")
        if self.video_min_pixels > self.video_max_pixels:
            raise PreprocessConfigError(
                f"video_min_pixels {self.video_min_pixels} is larger than video_max_pixels {self.video_max_pixels}")
        if not self.video_fps >= 0:
            raise PreprocessConfigError(f"video_fps is {self.video_fps}; pass 0 (every frame) or a positive rate")

    @property
    def factor(self) -> int:
        """Resized sides are multiples of this (patch_size * merge_size)."""
        return self.patch_size * self.merge_size

    @property
    def patch_dim(self) -> int:
        """Values per flattened patch: C * Tp * P * P."""
        return self.in_channels * self.temporal_patch_size * self.patch_size**2

    @classmethod
    def from_checkpoint(cls, checkpoint_dir, vision: bool = True, audio: bool = True, **overrides) -> PreprocessConfig:
        """Reads the sizes from ``config.json``'s vision config (if ``vision``) and audio config (if
        ``audio``), and the normalization from ``preprocessor_config.json`` if present; ``overrides``
        that are not None win.

        Raises:
            CheckpointError: no readable ``config.json`` or a requested sub-config missing.
            PreprocessConfigError: inconsistent values (the message says which).
        """
        from omnienc.encoders.weights import CheckpointError, read_thinker_subconfig

        kw: dict = {}
        root = Path(checkpoint_dir)
        vision = read_thinker_subconfig(root, "vision_config") if vision else None
        audio = read_thinker_subconfig(root, "audio_config") if audio else None
        if vision is not None:
            for ours, theirs in (("patch_size", "patch_size"), ("temporal_patch_size", "temporal_patch_size"),
                                 ("merge_size", "spatial_merge_size"), ("in_channels", "in_channels")):
                if theirs in vision:
                    kw[ours] = int(vision[theirs])
        if audio is not None and "num_mel_bins" in audio:
            kw["num_mel_bins"] = int(audio["num_mel_bins"])
        pre_path = root / "preprocessor_config.json"
        if pre_path.is_file():
            try:
                pre = json.loads(pre_path.read_text())
            except json.JSONDecodeError as e:
                raise CheckpointError(f"{pre_path}: not valid JSON ({e})") from None
            for ours, theirs in (("patch_size", "patch_size"), ("temporal_patch_size", "temporal_patch_size"),
                                 ("merge_size", "merge_size")):
                if theirs in pre and ours in kw and int(pre[theirs]) != kw[ours]:
                    raise CheckpointError(
                        f"{pre_path}: {theirs} is {pre[theirs]} but config.json's vision_config says {kw[ours]}")
            for key in ("image_mean", "image_std", "min_pixels"):
                if key in pre:
                    kw[key] = pre[key]
            if "min_pixels" not in pre and isinstance(pre.get("size"), dict) and "shortest_edge" in pre["size"]:
                kw["min_pixels"] = pre["size"]["shortest_edge"]  # newer configs keep the budget in size
        kw.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kw)

    def to_dict(self) -> dict:
        return asdict(self)


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


# --- readers -------------------------------------------------------------------------------------


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise InputError("reading images and videos needs Pillow; pip install pillow") from None
    return Image


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a file")


def load_image(path):
    """Opens and fully decodes an image file into a PIL image (the first frame of an animated one)."""
    Image = _pil()
    path = Path(path)
    _check_file(path)
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except Image.UnidentifiedImageError:
        raise InputError(f"{path}: not an image format Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"{path}: cannot decode the image ({e})") from None


class FrameSampler:
    """Streaming frame selection at ``fps`` frames per second of video time.

    ``take(ts)`` answers for each frame in order (``ts``: its start time in seconds): the first frame
    at or after each multiple of ``1 / fps`` is taken, no frame twice. ``fps = 0`` takes every frame.
    """

    def __init__(self, fps: float):
        self.fps = fps
        self.next_time = 0.0

    def take(self, ts: float) -> bool:
        if self.fps <= 0:
            return True
        if ts + 1e-9 < self.next_time:
            return False
        self.next_time = (math.floor(ts * self.fps + 1e-9) + 1) / self.fps
        return True


def spread(indices: list[int], max_frames: int) -> list[int]:
    """At most ``max_frames`` of ``indices``, evenly spread, first and last kept."""
    if len(indices) <= max_frames:
        return list(indices)
    pick = np.linspace(0, len(indices) - 1, max_frames).round().astype(int)
    return [indices[i] for i in pick]


def sample_frame_indices(timestamps: Sequence[float] | None, num_frames: int, fps: float,
                         max_frames: int) -> list[int]:
    """Frames of a video to keep: ``FrameSampler(fps)`` over ``timestamps`` (every frame when they
    are None), then ``spread`` to ``max_frames``."""
    if timestamps is None:
        keep = list(range(num_frames))
    else:
        sampler = FrameSampler(fps)
        keep = [i for i, ts in enumerate(timestamps) if sampler.take(ts)]
    return spread(keep, max_frames)


def read_video_frames(path, fps: float = VIDEO_FPS, max_frames: int = MAX_FRAMES):
    """Decodes a video into RGB PIL frames, sampled as ``sample_frame_indices`` says.

    Sources: a folder of image frames (sorted by name; every frame is kept, a folder has no timing),
    an animated image Pillow reads (GIF, APNG, WebP; frame durations give the timing, 100 ms where a
    frame has none), or any container PyAV decodes (mp4, mkv, webm, ...) if ``av`` is installed.

    Returns:
        (frames, their indices in the source, duration in seconds or None).
    """
    Image = _pil()
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in FRAME_EXTENSIONS)
        if not files:
            raise InputError(f"{path}: a video folder must hold image frames ({', '.join(FRAME_EXTENSIONS)})")
        keep = spread(list(range(len(files))), max_frames)
        frames = [load_image(files[i]).convert("RGB") for i in keep]
        sizes = {f.size for f in frames}
        if len(sizes) > 1:
            raise InputError(f"{path}: frames differ in size ({sorted(sizes)}); a video's frames must share one size")
        return frames, keep, None
    try:
        with Image.open(path) as im:
            sampler, taken, start = FrameSampler(fps), [], 0.0
            for i in range(getattr(im, "n_frames", 1)):
                im.seek(i)
                if sampler.take(start):
                    taken.append((i, im.convert("RGB")))
                start += float(im.info.get("duration") or GIF_DEFAULT_FRAME_MS) / 1000.0
    except Image.UnidentifiedImageError:
        return _read_video_av(path, fps, max_frames)
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise InputError(f"{path}: cannot decode the video frames ({e})") from None
    taken = [taken[j] for j in spread(list(range(len(taken))), max_frames)]
    return [f for _, f in taken], [i for i, _ in taken], start


def _read_video_av(path: Path, fps: float, max_frames: int):
    try:
        import av
    except ImportError:
        raise InputError(
            f"{path}: not an animated image Pillow reads; for mp4 and other containers install PyAV "
            "(pip install av), or pass a GIF or a folder of frames") from None
    sampler, taken, first, last = FrameSampler(fps), [], None, 0.0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{path}: has no video stream")
            stream = container.streams.video[0]
            rate = float(stream.average_rate or 0) or None
            for i, frame in enumerate(container.decode(stream)):
                ts = float(frame.time) if frame.time is not None else i / (rate or 25.0)
                first = ts if first is None else first
                last = ts - first
                if sampler.take(last):  # streaming: only sampled frames are converted and kept
                    taken.append((i, frame.to_image().convert("RGB")))
    except InputError:
        raise
    except Exception as e:  # PyAV raises its own error hierarchy (av.error.*)
        raise InputError(f"{path}: cannot decode the video ({e})") from None
    if not taken:
        raise InputError(f"{path}: the video has no frames")
    taken = [taken[j] for j in spread(list(range(len(taken))), max_frames)]
    return [f for _, f in taken], [i for i, _ in taken], last + (1.0 / rate if rate else 0.0)


def read_wav(path) -> tuple[np.ndarray, int, int]:
    """Reads a PCM WAV file with the stdlib ``wave`` module.

    Returns:
        (mono float32 samples in [-1, 1] (channels averaged), sample rate, channel count).
    """
    path = Path(path)
    _check_file(path)
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            raw = w.readframes(n)
    except (wave.Error, EOFError) as e:
        raise InputError(
            f"{path}: not a PCM WAV file the wave module reads ({e}); convert it to 16-bit PCM WAV") from None
    if width == 1:  # unsigned 8-bit
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 3:  # little-endian signed 24-bit: sign-extend through the top byte of an int32
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        x = ((b[:, 0] << 8 | b[:, 1] << 16 | b[:, 2] << 24) >> 8).astype(np.float32) / 8388608.0
    elif width == 4:
        x = np.frombuffer(raw, "<i4").astype(np.float32) / 2147483648.0
    else:
        raise InputError(f"{path}: {8 * width}-bit samples are not supported; use 8, 16, 24 or 32-bit PCM")
    x = x[: len(x) // channels * channels].reshape(-1, channels).mean(axis=1, dtype=np.float32)
    return x, rate, channels


def resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Band-limited resampling by the FFT: keeps the spectrum below both Nyquist rates.

    ``round(len(x) * target / rate)`` samples come out. The signal is treated as periodic, so the
    first and last few milliseconds can ring slightly; the log-mel features barely notice.
    """
    if rate == target or len(x) == 0:
        return x.astype(np.float32)
    n_out = max(1, round(len(x) * target / rate))
    spec = np.fft.rfft(x.astype(np.float64))
    out_bins = n_out // 2 + 1
    kept = np.zeros(out_bins, dtype=np.complex128)
    m = min(out_bins, len(spec))
    kept[:m] = spec[:m]
    if n_out % 2 == 0 and m == out_bins:  # the new Nyquist bin is real in a real signal
        kept[-1] = kept[-1].real
    return (np.fft.irfft(kept, n_out) * (n_out / len(x))).astype(np.float32)


# --- processors ------------------------------------------------------------------------------------


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


class Preprocessor:
    """Turns files into encoder inputs with transformers' processors (see the module docstring)."""

    def __init__(self, cfg: PreprocessConfig):
        self.cfg = cfg
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

    def _process(self, processor, frames, path: Path) -> tuple[torch.Tensor, list[int]]:
        try:
            out = processor(images=frames, return_tensors="pt")
        except ValueError as e:  # e.g. an aspect ratio above 200
            raise InputError(f"{path}: the image processor refused it ({e})") from None
        return out["pixel_values"].float(), out["image_grid_thw"].tolist()

    def image(self, path) -> VisualInput:
        """One image -> ``pixel_values [h*w, C*Tp*P*P]`` and grid ``(1, h, w)``."""
        path = Path(path)
        im = load_image(path)
        pixel_values, grids = self._process(self.image_processor, [im], path)
        t, h, w = grids[0]
        P = self.cfg.patch_size
        meta = {"source": str(path), "size": [im.height, im.width], "resized": [h * P, w * P]}
        return VisualInput(pixel_values, (t, h, w), meta)

    def video(self, path) -> VisualInput:
        """One video -> ``pixel_values [t*h*w, C*Tp*P*P]`` and grid ``(ceil(frames/Tp), h, w)``."""
        path = Path(path)
        cfg = self.cfg
        frames, indices, seconds = read_video_frames(path, cfg.video_fps, cfg.max_frames)
        pixel_values, grids = self._process(self.video_frame_processor, frames, path)
        _, h, w = grids[0]
        n = h * w
        C, Tp, P = cfg.in_channels, cfg.temporal_patch_size, cfg.patch_size
        # Each frame's patches carry the frame Tp times; keep one slice: [F, h*w, C, P, P].
        per_frame = pixel_values.view(len(frames), n, C, Tp, P, P)[:, :, :, 0]
        if pad := -len(frames) % Tp:
            per_frame = torch.cat([per_frame, per_frame[-1:].expand(pad, -1, -1, -1, -1)])
        t = per_frame.shape[0] // Tp
        meta = {"source": str(path), "frames": len(frames), "frame_indices": indices,
                "size": [frames[0].height, frames[0].width], "resized": [h * P, w * P]}
        if seconds is not None:
            meta["seconds"] = round(seconds, 6)
        return VisualInput(patchify_frames(per_frame, Tp).contiguous(), (t, h, w), meta)

    def audio(self, path) -> AudioInput:
        """One WAV file -> ``input_features [num_mel_bins, T]`` (valid frames only, T = samples // 160)."""
        path = Path(path)
        cfg = self.cfg
        x, rate, channels = read_wav(path)
        x = resample(x, rate, cfg.sampling_rate)
        if len(x) < cfg.n_fft:
            raise InputError(
                f"{path}: {len(x)} samples at {cfg.sampling_rate} Hz is too short; "
                f"an audio needs at least {cfg.n_fft} ({1000 * cfg.n_fft / cfg.sampling_rate:g} ms)")
        # As Qwen3OmniMoeProcessor calls it: a batch, padded to its longest, no truncation, and the
        # attention mask marking the real frames.
        out = self.feature_extractor([x], sampling_rate=cfg.sampling_rate, padding=True, truncation=False,
                                     return_attention_mask=True, return_tensors="pt")
        mask = out["attention_mask"][0].bool()
        features = out["input_features"][0][:, mask].float().contiguous()  # [mel, T]
        meta = {"source": str(path), "sample_rate": rate, "channels": channels,
                "seconds": round(len(x) / cfg.sampling_rate, 6)}
        return AudioInput(features, meta)


__all__ = [
    "AudioInput",
    "FrameSampler",
    "InputError",
    "PreprocessConfig",
    "PreprocessConfigError",
    "Preprocessor",
    "VisualInput",
    "image_processor_class",
    "load_image",
    "make_feature_extractor",
    "make_image_processor",
    "patchify_frames",
    "read_video_frames",
    "read_wav",
    "resample",
    "sample_frame_indices",
    "spread",
]
