"""Decoding files into raw media: images through Pillow, videos through Pillow (animated images,
folders of frames) or PyAV (mp4 and other containers), audio through soundfile (libsndfile: WAV of
any PCM, float or extensible format, FLAC, OGG/Vorbis, Opus, AIFF, ...).

Every error is an ``InputError`` naming the file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .config import MAX_FRAMES, VIDEO_FPS, InputError

GIF_DEFAULT_FRAME_MS = 100  # what browsers show for a GIF frame without a duration
FRAME_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")


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
    """Opens and fully decodes an image file into a PIL image (the first frame of an animated one),
    in the file's own mode (the preprocessing converts to RGB as transformers does)."""
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
    Used while decoding files, where frame times may be irregular and the frame count unknown.
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
    """Frames of a decoded video to keep: ``FrameSampler(fps)`` over ``timestamps`` (every frame
    when they are None), then ``spread`` to ``max_frames``."""
    if timestamps is None:
        keep = list(range(num_frames))
    else:
        sampler = FrameSampler(fps)
        keep = [i for i, ts in enumerate(timestamps) if sampler.take(ts)]
    return spread(keep, max_frames)


def read_video_frames(path, fps: float = VIDEO_FPS, max_frames: int = MAX_FRAMES):
    """Decodes a video into RGB PIL frames, sampled while decoding as ``sample_frame_indices`` says.

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


def read_audio(path) -> tuple[np.ndarray, int, int]:
    """Reads an audio file with soundfile (libsndfile).

    Returns:
        (float32 samples ``[channels, samples]`` in [-1, 1] for integer formats, sample rate,
        channel count). The preprocessing averages channels to mono.
    """
    path = Path(path)
    _check_file(path)
    try:
        import soundfile
    except ImportError:
        raise InputError("reading audio files needs soundfile; pip install soundfile") from None
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)  # [samples, channels]
    except (RuntimeError, soundfile.LibsndfileError, TypeError, ValueError) as e:
        raise InputError(
            f"{path}: not an audio file soundfile can read ({e}); use WAV, FLAC or OGG") from None
    return np.ascontiguousarray(data.T), int(rate), int(data.shape[1])
