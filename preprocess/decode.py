"""Decoding files into raw media: images through Pillow, videos through Pillow (animated images,
folders of frames) or PyAV (mp4 and other containers), audio through soundfile (libsndfile: WAV of
any PCM, float or extensible format, FLAC, OGG/Vorbis, Opus, AIFF, ...).

Every error is an ``InputError`` naming the file. Sizes are checked against the config's limits
(``PreprocessConfig.source_pixel_limit``, ``video_pixel_limit``, ``audio_seconds_limit``) from the
file's header, before anything is decoded; a file whose samples would take more than
``MAX_DECODED_SAMPLES`` float32 values (8 GiB) is refused too, whatever its duration. Running out
of memory while decoding is an ``InputError`` as well.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import numpy as np

from .config import InputError, PreprocessConfig

GIF_DEFAULT_FRAME_MS = 100  # what browsers show for a GIF frame without a duration
FRAME_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")
MAX_DECODED_SAMPLES = 2**31  # channels x frames of one audio file, as float32: 8 GiB


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise InputError("reading images and videos needs Pillow; pip install pillow") from None
    return Image


def _check_file(path: Path) -> None:
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a file")
    if not path.exists():
        raise InputError(f"{path}: no such file")


@contextlib.contextmanager
def _pillow_errors(path: Path, what: str):
    """Pillow's failures as ``InputError``s naming ``path``; its decompression-bomb warning is
    silenced (``_check_pixels`` applies our own limit, from the header, first)."""
    Image = _pil()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    except Image.DecompressionBombError as e:  # Pillow refuses at open above twice its own threshold
        raise InputError(f"{path}: the header claims a size Pillow refuses to decode ({e}); "
                         "downscale the file first") from None
    except MemoryError:
        raise InputError(f"{path}: out of memory while decoding the {what}; downscale the file first") from None


def _check_pixels(path: Path, size: tuple[int, int], cfg: PreprocessConfig, what: str = "image") -> None:
    """Refuses an image or frame whose header claims more than ``source_pixel_limit`` pixels."""
    w, h = size
    if w * h > cfg.source_pixel_limit:
        raise InputError(
            f"{path}: the header says the {what} is {w}x{h} (width x height) = {w * h:,} pixels, above the limit of "
            f"{cfg.source_pixel_limit:,} (PreprocessConfig.source_pixel_limit); it is refused before decoding: "
            "downscale the file, or raise the limit where the machine holds it")


def _check_video_pixels(path: Path, kept: int, size: tuple[int, int], cfg: PreprocessConfig) -> None:
    """Refuses a video whose kept frames would hold more than ``video_pixel_limit`` pixels."""
    w, h = size
    if kept * w * h > cfg.video_pixel_limit:
        raise InputError(
            f"{path}: {kept} frames of {w}x{h} (width x height) to keep = {kept * w * h:,} pixels, above the limit of "
            f"{cfg.video_pixel_limit:,} (PreprocessConfig.video_pixel_limit); lower max_frames or video_fps, "
            "or downscale the video")


@contextlib.contextmanager
def _open_image(path: Path, doing: str):
    """``Image.open(path)``, every way it fails an ``InputError`` naming the file and ``doing``."""
    Image = _pil()
    try:
        with _pillow_errors(path, "image"), Image.open(path) as im:
            yield im
    except Image.UnidentifiedImageError:
        raise InputError(f"{path}: not an image format Pillow can read") from None
    except InputError:
        raise
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"{path}: cannot {doing} ({e})") from None


def _header_size(path: Path) -> tuple[int, int]:
    """An image file's (width, height) from its header, nothing decoded."""
    with _open_image(path, "read the image header") as im:
        return im.size


def load_image(path, config: PreprocessConfig | None = None):
    """Opens and fully decodes an image file into a PIL image (the first frame of an animated one),
    in the file's own mode (the preprocessing converts to RGB as transformers does). The header's
    size is checked against ``config.source_pixel_limit`` before decoding."""
    cfg = config or PreprocessConfig()
    path = Path(path)
    _check_file(path)
    with _open_image(path, "decode the image") as im:
        _check_pixels(path, im.size, cfg)
        im.load()
        return im.copy()


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
        sizes = {}
        for i in keep:
            sizes.setdefault(_header_size(files[i]), files[i])
        for size, file in sizes.items():
            _check_pixels(file, size, cfg, "frame")
        if len(sizes) > 1:
            raise InputError(f"{path}: frames differ in size ({sorted(sizes)}); a video's frames must share one size")
        _check_video_pixels(path, len(keep), next(iter(sizes)), cfg)
        try:
            frames = [load_image(files[i], cfg).convert("RGB") for i in keep]
        except MemoryError:
            raise InputError(f"{path}: out of memory while decoding {len(keep)} frames; lower max_frames") from None
        return frames, keep, None
    try:
        with _pillow_errors(path, "video frames"), Image.open(path) as im:
            _check_pixels(path, im.size, cfg, "frame")
            count = getattr(im, "n_frames", 1)
            seconds = 0.0
            for i in range(count):
                im.seek(i)
                seconds += float(im.info.get("duration") or GIF_DEFAULT_FRAME_MS) / 1000.0
            keep = sample_video_indices(count, count / seconds, cfg)
            _check_video_pixels(path, len(keep), im.size, cfg)
            frames = []
            for i in keep:
                im.seek(i)
                frames.append(im.convert("RGB"))
    except Image.UnidentifiedImageError:
        return _read_video_av(path, cfg)
    except InputError:
        raise
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
            _check_pixels(path, (stream.width, stream.height), cfg, "frame")
            rate = float(stream.average_rate or 0) or None
            count = stream.frames or sum(1 for p in container.demux(stream) if p.size)
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            keep = set(sample_video_indices(count, rate, cfg)) if count else set()
            _check_video_pixels(path, len(keep), (stream.width, stream.height), cfg)
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
    except MemoryError:
        raise InputError(f"{path}: out of memory while decoding the video; lower max_frames or downscale it") from None
    except Exception as e:  # PyAV raises its own error hierarchy (av.error.*)
        raise InputError(f"{path}: cannot decode the video ({e})") from None
    if not decoded:
        raise InputError(f"{path}: the video has no frames")
    if not taken:  # the header's frame count was wrong: sample what was decoded
        raise InputError(f"{path}: the stream reports {count} frames but {decoded} decoded; cannot sample it")
    return [f for _, f in taken], [i for i, _ in taken], last + (1.0 / rate if rate else 0.0)


def read_audio(path, config: PreprocessConfig | None = None) -> tuple[np.ndarray, int, int]:
    """Reads an audio file with soundfile (libsndfile), after checking its header: some samples,
    at most ``config.audio_seconds_limit`` seconds and ``MAX_DECODED_SAMPLES`` samples.

    Returns:
        (float32 samples ``[channels, samples]`` in [-1, 1] for integer formats, sample rate,
        channel count). The preprocessing averages channels to mono.
    """
    cfg = config or PreprocessConfig()
    path = Path(path)
    _check_file(path)
    try:
        import soundfile
    except ImportError:
        raise InputError("reading audio files needs soundfile; pip install soundfile") from None
    unreadable = (RuntimeError, soundfile.LibsndfileError, TypeError, ValueError)
    try:
        info = soundfile.info(str(path))
    except unreadable as e:
        raise InputError(f"{path}: not an audio file soundfile can read ({e}); use WAV, FLAC or OGG") from None
    frames, rate, channels = int(info.frames), int(info.samplerate), int(info.channels)
    if frames <= 0 or channels <= 0 or rate <= 0:
        raise InputError(f"{path}: the file holds no audio samples (its header: {frames} frames, {channels} "
                         f"channel(s), {rate} Hz)")
    if frames / rate > cfg.audio_seconds_limit:
        raise InputError(
            f"{path}: the header says {frames / rate:,.1f} s of audio, above the limit of "
            f"{cfg.audio_seconds_limit:g} s (PreprocessConfig.audio_seconds_limit); cut it into shorter files")
    if frames * channels > MAX_DECODED_SAMPLES:
        raise InputError(
            f"{path}: {channels} channels x {frames:,} samples would take {frames * channels * 4 / 2**30:.1f} GiB "
            f"as float32, above the {MAX_DECODED_SAMPLES * 4 / 2**30:g} GiB a decode may take; downmix or cut it")
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)  # [samples, channels]
    except MemoryError:
        raise InputError(f"{path}: out of memory while decoding {frames / rate:.1f} s of audio") from None
    except unreadable as e:
        raise InputError(
            f"{path}: not an audio file soundfile can read ({e}); use WAV, FLAC or OGG") from None
    if data.shape[0] == 0:  # the header promised samples that the data does not hold
        raise InputError(f"{path}: the file holds no audio samples")
    return np.ascontiguousarray(data.T), int(rate), int(data.shape[1])
