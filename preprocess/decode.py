"""Decoding files into raw media: images through Pillow, videos through Pillow (animated images,
folders of frames) or PyAV (mp4 and other containers), audio through soundfile (libsndfile: WAV of
any PCM, float or extensible format, FLAC, OGG/Vorbis, Opus, AIFF, ...).

Every error is an ``InputError`` naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .config import InputError, PreprocessConfig

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


def read_video_frames(path, config: PreprocessConfig | None = None):
    """Decodes a video into RGB PIL frames, sampled by ``image.sample_video_indices`` (the one rule
    that ``VisionRequest.from_video`` also applies: qwen-omni-utils' 2 frames per second, at least 4,
    a multiple of the temporal patch, evenly spread from the first frame to the last).

    Sources: a folder of image frames (sorted by name; a folder has no timing, so every frame is
    kept, thinned to ``max_frames``), an animated image Pillow reads (GIF, APNG, WebP; frame
    durations give the rate, 100 ms where a frame has none), or any container PyAV decodes (mp4,
    mkv, webm, ...) if ``av`` is installed: the frame count and rate come from the stream (counted
    by demuxing when the header has no count), and only the kept frames are converted.

    Returns:
        (frames, their indices in the source, duration in seconds or None).
    """
    from .config import PreprocessConfig
    from .image import sample_video_indices

    cfg = config or PreprocessConfig()
    Image = _pil()
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in FRAME_EXTENSIONS)
        if not files:
            raise InputError(f"{path}: a video folder must hold image frames ({', '.join(FRAME_EXTENSIONS)})")
        keep = sample_video_indices(len(files), None, cfg)
        frames = [load_image(files[i]).convert("RGB") for i in keep]
        sizes = {f.size for f in frames}
        if len(sizes) > 1:
            raise InputError(f"{path}: frames differ in size ({sorted(sizes)}); a video's frames must share one size")
        return frames, keep, None
    try:
        with Image.open(path) as im:
            count = getattr(im, "n_frames", 1)
            seconds = 0.0
            for i in range(count):
                im.seek(i)
                seconds += float(im.info.get("duration") or GIF_DEFAULT_FRAME_MS) / 1000.0
            keep = sample_video_indices(count, count / seconds, cfg)
            frames = []
            for i in keep:
                im.seek(i)
                frames.append(im.convert("RGB"))
    except Image.UnidentifiedImageError:
        return _read_video_av(path, cfg)
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise InputError(f"{path}: cannot decode the video frames ({e})") from None
    return frames, keep, seconds


def _read_video_av(path: Path, cfg):
    from .image import sample_video_indices

    try:
        import av
    except ImportError:
        raise InputError(
            f"{path}: not an animated image Pillow reads; for mp4 and other containers install PyAV "
            "(pip install av), or pass a GIF or a folder of frames") from None
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{path}: has no video stream")
            stream = container.streams.video[0]
            rate = float(stream.average_rate or 0) or None
            count = stream.frames or sum(1 for p in container.demux(stream) if p.size)
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            keep = set(sample_video_indices(count, rate, cfg)) if count else set()
            taken, first, last, decoded = [], None, 0.0, 0
            for i, frame in enumerate(container.decode(stream)):
                decoded += 1
                ts = float(frame.time) if frame.time is not None else i / (rate or 25.0)
                first = ts if first is None else first
                last = ts - first
                if i in keep:  # only kept frames are converted
                    taken.append((i, frame.to_image().convert("RGB")))
    except InputError:
        raise
    except Exception as e:  # PyAV raises its own error hierarchy (av.error.*)
        raise InputError(f"{path}: cannot decode the video ({e})") from None
    if not decoded:
        raise InputError(f"{path}: the video has no frames")
    if not taken:  # the header's frame count was wrong: sample what was decoded
        raise InputError(f"{path}: the stream reports {count} frames but {decoded} decoded; cannot sample it")
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
