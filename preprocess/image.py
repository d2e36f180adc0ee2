"""Images and video frames to the vision encoder's inputs, in torch, on any device.

The result equals what transformers' ``Qwen2VLImageProcessorPil`` makes (Qwen3-Omni's image
processor), up to the last bit of the bicubic filter:

1. RGB: a PIL image in another mode is converted as transformers converts it (transparency composited
   over white); tensors and arrays must already be ``uint8 [H, W, 3]``.
2. Size: ``smart_resize`` (sides multiples of ``patch_size * merge_size``, pixels within the budget,
   aspect ratio kept), the same integers as transformers'.
3. Resize: Pillow's bicubic (a = -0.5, support widened by the scale when shrinking) is what
   ``F.interpolate(mode="bicubic", antialias=True)`` computes; like Pillow it runs one pass per axis
   that changes size, in Pillow's order (horizontal first unless the height shrinks by more than
   twice as many pixels as the width), and rounds each pass to integers in [0, 255]. Differences
   left: Pillow's fixed-point coefficients flip an occasional rounding by one level.
4. ``(x / 255 - mean) / std`` and the patch layout, fused in one kernel per image (or per run of
   consecutive images of one size): ``[t*h*w, C*Tp*P*P]`` rows in merge-window order (t, merged row,
   merged column, row in window, column in window), each ``[C, Tp, P, P]``; a still image is its frame
   repeated Tp times.

Videos: frames are sampled on the host (``sample_video_indices``: qwen-omni-utils' rule), resized
together, an odd count padded with its last frame, and patch ``[C, Tp, P, P]`` holds frames
``Tp*i .. Tp*i+Tp-1`` (HF's video processor's layout).

Only sizes reach the host: validation and planning use image dimensions, never pixel values, so
nothing waits for the device.
"""

from __future__ import annotations

import math
import numbers
import operator
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from .config import MAX_ASPECT_RATIO, PreprocessConfig


@dataclass
class VisionInputs:
    """Encoder inputs of a batch of images, or of one video.

    Attributes:
        pixel_values: ``[sum(t*h*w), C*Tp*P*P]`` float32 on the requested device, items in order.
        grid_thw: one ``(t, h, w)`` per item, in patches (host ints).
        sizes: each item's ``(height, width)`` in pixels before resizing.
        frame_indices: for a video, the source frames kept (before the odd-count padding); else None.
    """

    pixel_values: torch.Tensor
    grid_thw: list[tuple[int, int, int]]
    sizes: list[tuple[int, int]]
    frame_indices: list[int] | None = None


def _fail(kind: str, index: int, field: str, problem: str):
    raise ValueError(f"{kind} {index}: field '{field}' {problem}")


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """The Qwen2-VL resize rule: both sides multiples of ``factor``, ``height * width`` within
    ``[min_pixels, max_pixels]``, the aspect ratio kept as closely as the rounding allows.

    Sides are first rounded to the nearest multiple (Python's ``round``, half to even, as
    transformers); if the area then exceeds ``max_pixels`` both sides shrink by the same factor and
    round down (never below ``factor``), if it falls short of ``min_pixels`` they grow and round up.

    Raises:
        ValueError: a side is not positive, or one side is more than 200 times the other.
    """
    if height < 1 or width < 1:
        raise ValueError(f"image size {height}x{width}: both sides must be positive")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(f"image size {height}x{width}: the aspect ratio must be at most {MAX_ASPECT_RATIO}")
    h = round(height / factor) * factor
    w = round(width / factor) * factor
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def pil_to_rgb(image):
    """A PIL image in RGB, converted as transformers converts it: images with an alpha band or a
    transparency entry are composited over opaque white; others go through ``convert("RGB")``."""
    from PIL import Image

    if image.mode == "RGB":
        return image
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _from_numpy(a: np.ndarray) -> torch.Tensor:
    """A tensor sharing ``a``'s memory; read-only arrays (e.g. ``np.asarray`` of a PIL image) are
    fine because preprocessing never writes into its inputs."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(a)


def _is_pil(x) -> bool:
    try:
        from PIL import Image
    except ImportError:
        return False
    return isinstance(x, Image.Image)


def _image_size(x, kind: str, index: int) -> tuple[int, int]:
    """Validates one image (PIL, or uint8 tensor/array ``[H, W, 3]``); returns ``(H, W)``. No pixel
    is read."""
    if _is_pil(x):
        w, h = x.size
        if h < 1 or w < 1:
            _fail(kind, index, "size", f"is {h}x{w} pixels; an image needs at least one pixel")
        return h, w
    if not isinstance(x, (torch.Tensor, np.ndarray)):
        hint = " (a file name? decode it first: omnienc.preprocess.load_image)" if isinstance(x, (str, bytes)) \
            or hasattr(x, "__fspath__") else ""
        _fail(kind, index, "type",
              f"must be a PIL image, a torch.Tensor or a numpy array, got {type(x).__name__}{hint}")
    dtype = x.dtype
    if dtype not in (torch.uint8, np.uint8):
        _fail(kind, index, "dtype", f"must be uint8 (pixel values 0-255), got {dtype}")
    if x.ndim != 3 or x.shape[2] != 3:
        hint = " (a batch of frames? pass a list of images, or use from_video)" if x.ndim == 4 else ""
        _fail(kind, index, "shape", f"must be [H, W, 3] (RGB, channels last), got {tuple(x.shape)}{hint}")
    h, w = int(x.shape[0]), int(x.shape[1])
    if h < 1 or w < 1:
        _fail(kind, index, "shape", f"is {tuple(x.shape)}: an image needs at least one pixel")
    return h, w


def _resolve_device(device, items) -> torch.device:
    """``device`` if given, else the device of the first input tensor on an accelerator, else CPU."""
    if device is not None:
        return torch.device(device)
    for x in items:
        if isinstance(x, torch.Tensor) and x.device.type != "cpu":
            return x.device
    return torch.device("cpu")


def _check_budget(min_pixels: int, max_pixels: int, limit: int) -> None:
    if min_pixels < 1 or max_pixels < 1 or min_pixels > max_pixels:
        raise ValueError(f"min_pixels {min_pixels} and max_pixels {max_pixels}: need 1 <= min_pixels <= max_pixels")
    if max_pixels > limit:
        raise ValueError(f"max_pixels {max_pixels} is above the limit of {limit} (PreprocessConfig.pixel_limit); "
                         "pass a smaller max_pixels, or raise the limit where a machine holds more")


def _pixel_count(name: str, value) -> int:
    """A pixel budget given by the caller: an integer (not a bool, string or fraction)."""
    if isinstance(value, bool) or isinstance(value, (str, bytes)):
        raise ValueError(f"{name} is {value!r}; pass a whole number of pixels")
    try:
        return operator.index(value)
    except TypeError:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError(f"{name} is {value!r}; pass a whole number of pixels") from None


def _check_source(kind: str, index: int, size: tuple[int, int], cfg: PreprocessConfig) -> None:
    """Refuses an image or frame of more than ``source_pixel_limit`` pixels, before any work."""
    h, w = size
    if h * w > cfg.source_pixel_limit:
        _fail(kind, index, "size", f"is {h}x{w} (height x width) = {h * w:,} pixels, above the limit of "
              f"{cfg.source_pixel_limit:,} (PreprocessConfig.source_pixel_limit); downscale it first, or raise "
              "the limit where the machine holds it (resizing takes 12 bytes per pixel)")


@lru_cache(maxsize=16)
def _norm_constants(mean: tuple, std: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``scale, bias`` ``[C, 1, 1, 1]`` on ``device`` with ``x * scale + bias == (x / 255 - mean) / std``."""
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], dtype=torch.float32).view(-1, 1, 1, 1)
    bias = torch.tensor([-m / s for m, s in zip(mean, std)], dtype=torch.float32).view(-1, 1, 1, 1)
    return scale.to(device), bias.to(device)


def resize_bicubic(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pillow's bicubic resize of a batch of RGB images, on any device.

    Args:
        x: ``[N, C, H, W]`` uint8 or float (any memory format; channels-last avoids copies).

    Returns:
        float32 ``[N, C, height, width]`` holding integers in [0, 255] (Pillow returns uint8): one
        antialiased bicubic pass per axis that changes, in Pillow's order, each rounded and clamped.
    """
    H, W = x.shape[-2:]
    x = x if x.dtype == torch.float32 else x.float()
    vertical_first = H > height and (H - height) > 2 * (W - width)
    passes = ((height, W), (height, width)) if vertical_first else ((H, width), (height, width))
    for size in passes:
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
            x = x.round_().clamp_(0.0, 255.0)
    return x


def _write_patches(dst: torch.Tensor, frames: torch.Tensor, cfg: PreprocessConfig, scale, bias) -> None:
    """Writes normalized patches of ``frames`` into ``dst`` in one kernel.

    Args:
        dst: ``[n * gh * gw, C*Tp*P*P]`` float32 rows (contiguous).
        frames: ``[F, H, W, C]`` (uint8 or float, channels last). ``F = n * Tp`` for a video (frames
            ``Tp*i .. Tp*i+Tp-1`` share patch row block i) or ``F = n`` still images (each repeated
            Tp times).
        scale, bias: ``[C, 1, 1, 1]`` normalization constants.
    """
    P, m, Tp = cfg.patch_size, cfg.merge_size, cfg.temporal_patch_size
    Fr, H, W, C = frames.shape
    n = dst.shape[0] // ((H // P) * (W // P))
    tp = Fr // n  # Tp (video) or 1 (still images, broadcast)
    gh, gw = H // (P * m), W // (P * m)
    src = frames.reshape(n, tp, gh, m, P, gw, m, P, C).permute(0, 2, 5, 3, 6, 8, 1, 4, 7)
    src = src.expand(n, gh, gw, m, m, C, Tp, P, P)  # [n, merged row, merged col, row, col, C, Tp, P, P]
    torch.addcmul(bias, src, scale, out=dst.view(n, gh, gw, m, m, C, Tp, P, P))


def _image_budget(cfg: PreprocessConfig, min_pixels, max_pixels, video: bool = False) -> tuple[int, int]:
    lo = _pixel_count("min_pixels", min_pixels) if min_pixels is not None else (
        cfg.video_min_pixels if video else cfg.min_pixels)
    hi = _pixel_count("max_pixels", max_pixels) if max_pixels is not None else (
        cfg.video_max_pixels if video else cfg.max_pixels)
    _check_budget(lo, hi, cfg.pixel_limit)
    return lo, hi


def _image_list(images) -> list:
    # One item, not a sequence of them (a file name is a string: its characters are no images).
    if _is_pil(images) or isinstance(images, (torch.Tensor, np.ndarray, str, bytes)) or hasattr(images, "__fspath__"):
        images = [images]
    if not isinstance(images, Sequence) or len(images) == 0:
        raise ValueError("images: expected a non-empty list of images")
    return list(images)


def _plan_images(images: list, cfg: PreprocessConfig, lo: int, hi: int) -> tuple[list, list]:
    """Validates a list of images; returns their sizes and resize targets (host ints, no pixel read)."""
    sizes = [_image_size(x, "image", i) for i, x in enumerate(images)]
    for i, size in enumerate(sizes):
        _check_source("image", i, size, cfg)
    targets = []
    for i, (h, w) in enumerate(sizes):
        try:
            targets.append(smart_resize(h, w, cfg.factor, lo, hi))
        except ValueError as e:
            _fail("image", i, "size", f"cannot be resized: {e}")
    return sizes, targets


def _pixels(x):
    """An image's pixels as a stager source: a uint8 array (PIL images converted to RGB) or the
    tensor as given (host or device)."""
    return np.asarray(pil_to_rgb(x)) if _is_pil(x) else x


class ImageBatch:
    """Images of many lists (requests), planned together and preprocessed by size group.

    ``add(images, sizes, targets)`` registers one list; ``stage(stager)`` puts every host image into
    a uint8 ``Stager`` grouped by (size, target), so each group is one ``[n, H, W, 3]`` view of the
    device buffer; after the stager is sent, ``finish()`` resizes each group in one batch and writes
    its normalized patches with one kernel, and returns each list's ``pixel_values``: a view of its
    group's rows, or one concatenation when a list mixes groups.
    """

    def __init__(self, cfg: PreprocessConfig, device: torch.device):
        self.cfg, self.device = cfg, device
        self.lists: list[list[tuple[tuple, int]]] = []  # per list: (group key, index in group)
        self.groups: dict[tuple, list] = {}  # (size, target) -> images

    def add(self, images: list, sizes: list, targets: list) -> None:
        entry = []
        for x, size, target in zip(images, sizes, targets):
            members = self.groups.setdefault((size, target), [])
            entry.append(((size, target), len(members)))
            members.append(x)
        self.lists.append(entry)

    def stage(self, stager) -> None:
        self._slots = {}
        for key, members in self.groups.items():
            (H, W), _ = key
            self._slots[key] = stager.add_stack([_pixels(x) for x in members], (len(members), H, W, 3))

    def finish(self, stager) -> list[tuple[torch.Tensor, list]]:
        cfg, dev = self.cfg, self.device
        P = cfg.patch_size
        scale, bias = _norm_constants(cfg.image_mean, cfg.image_std, dev)
        rows_of, bufs = {}, {}
        for key, members in self.groups.items():
            (H, W), (th, tw) = key
            x = stager.get(self._slots[key])  # [n, H, W, 3] uint8 on the device
            if (th, tw) != (H, W):
                x = resize_bicubic(x.permute(0, 3, 1, 2), th, tw).permute(0, 2, 3, 1)  # [n, th, tw, 3] float
            rows = (th // P) * (tw // P)
            buf = torch.empty(len(members) * rows, cfg.patch_dim, dtype=torch.float32, device=dev)
            _write_patches(buf, x, cfg, scale, bias)
            rows_of[key], bufs[key] = rows, buf
        out = []
        for entry in self.lists:
            grids = [(1, key[1][0] // P, key[1][1] // P) for key, _ in entry]
            key0, j0 = entry[0]
            if all(k == key0 and j == j0 + n for n, (k, j) in enumerate(entry)):  # one run of one group
                r = rows_of[key0]
                px = bufs[key0][j0 * r : (j0 + len(entry)) * r]
            else:
                px = torch.cat([bufs[k][j * rows_of[k] : (j + 1) * rows_of[k]] for k, j in entry])
            out.append((px, grids))
        return out


def _runs(frames, indices: list[int]) -> list:
    """``frames[indices]`` (an array or tensor) as views: one slice per run of consecutive indices
    (no copy)."""
    out, start = [], 0
    for k in range(1, len(indices) + 1):
        if k == len(indices) or indices[k] != indices[k - 1] + 1:
            out.append(frames[indices[start] : indices[k - 1] + 1])
            start = k
    return out


def preprocess_images(images, config: PreprocessConfig | None = None, *, min_pixels: int | None = None,
                      max_pixels: int | None = None, device=None) -> VisionInputs:
    """A batch of images to ``pixel_values`` and ``grid_thw``, as Qwen3-Omni's image processor.

    Args:
        images: a list of PIL images (any mode) and/or uint8 tensors or arrays ``[H, W, 3]`` (RGB);
            tensors may already live on the device. A single image is taken as a list of one.
        config: patching, normalization and pixel budget (default: Qwen3-Omni's).
        min_pixels, max_pixels: override the config's image pixel budget.
        device: where the work runs and the output lives (default: the input tensors' accelerator,
            else the CPU).

    Returns:
        ``VisionInputs`` with ``pixel_values [sum(h*w), C*Tp*P*P]`` float32 and ``grid_thw`` rows
        ``(1, h, w)`` in input order.

    Work: host images travel through ``staging.Stager``; images of one (size, target) are
    resized together and patched by one kernel (``ImageBatch``).

    Raises:
        ValueError: naming the image index and field (type, dtype, shape, size) before any work.
    """
    from .staging import Stager

    cfg = config or PreprocessConfig()
    lo, hi = _image_budget(cfg, min_pixels, max_pixels)
    images = _image_list(images)
    sizes, targets = _plan_images(images, cfg, lo, hi)
    device = _resolve_device(device, images)
    batch, stager = ImageBatch(cfg, device), Stager(torch.uint8, device, cfg.pin_host_inputs)
    batch.add(images, sizes, targets)
    batch.stage(stager)
    stager.send()
    (px, grids), = batch.finish(stager)
    return VisionInputs(px, grids, sizes)


def sample_video_indices(num_frames: int, fps: float | None, config: PreprocessConfig | None = None) -> list[int]:
    """Which frames of a video to keep, as qwen-omni-utils samples a video for Qwen3-Omni.

    With the source frame rate ``fps``: ``num_frames / fps * video_fps`` frames (2 per second),
    at least ``video_min_frames`` and at most ``max_frames`` and ``num_frames``, rounded to a multiple
    of ``temporal_patch_size`` (half to even), spread evenly from the first frame to the last
    (``linspace(0, num_frames - 1, n).round()``). A video shorter than one temporal patch keeps its
    frames. Without ``fps`` (or with ``video_fps = 0``) the frames count as already sampled: all are
    kept, evenly thinned to ``max_frames``.
    """
    cfg = config or PreprocessConfig()
    Tp = cfg.temporal_patch_size
    if fps is None or cfg.video_fps == 0:
        if num_frames <= cfg.max_frames:
            return list(range(num_frames))
        return np.linspace(0, num_frames - 1, cfg.max_frames).round().astype(int).tolist()
    lo = math.ceil(cfg.video_min_frames / Tp) * Tp
    hi = math.floor(min(cfg.max_frames, num_frames) / Tp) * Tp
    n = min(max(num_frames / fps * cfg.video_fps, lo), hi)
    n = min(round(n / Tp) * Tp, num_frames)
    if n < Tp:
        return list(range(num_frames))
    return torch.linspace(0, num_frames - 1, n).round().long().tolist()


@dataclass
class VideoPlan:
    """One validated video: source size, resize target, kept frames (before and after padding to a
    multiple of Tp) and its grid (host ints)."""

    frames: object
    size: tuple[int, int]
    target: tuple[int, int]
    keep: list[int]
    padded: list[int]
    grid: tuple[int, int, int]

    def stage(self, stager) -> None:
        """Puts the kept frames into a uint8 ``Stager``: only they travel (runs of consecutive
        frames of an array or tensor as one copy each)."""
        f = self.frames
        shape = (len(self.padded), *self.size, 3)
        if isinstance(f, (torch.Tensor, np.ndarray)):
            self._slot = stager.add_stack(_runs(f, self.padded), shape)
        else:
            self._slot = stager.add_stack([_pixels(f[i]) for i in self.padded], shape)

    def finish(self, stager, cfg: PreprocessConfig, device: torch.device) -> torch.Tensor:
        x = stager.get(self._slot)
        th, tw = self.target
        if (th, tw) != self.size:
            x = resize_bicubic(x.permute(0, 3, 1, 2), th, tw).permute(0, 2, 3, 1)
        t, h, w = self.grid
        out = torch.empty(t * h * w, cfg.patch_dim, dtype=torch.float32, device=device)
        scale, bias = _norm_constants(cfg.image_mean, cfg.image_std, device)
        _write_patches(out, x, cfg, scale, bias)
        return out


def plan_video(frames, cfg: PreprocessConfig, fps=None, min_pixels=None, max_pixels=None) -> VideoPlan:
    """Validates a video (see ``preprocess_video``) and plans it; reads no pixel."""
    lo, hi = _image_budget(cfg, min_pixels, max_pixels, video=True)
    if fps is not None and (isinstance(fps, bool) or not isinstance(fps, numbers.Real)
                            or not (fps > 0 and math.isfinite(fps))):
        raise ValueError(f"fps is {fps!r}: pass the frames' rate in frames per second (a number > 0), or None")
    if isinstance(frames, (torch.Tensor, np.ndarray)):
        if frames.dtype not in (torch.uint8, np.uint8):
            raise ValueError(f"frames: field 'dtype' must be uint8 (pixel values 0-255), got {frames.dtype}")
        if frames.ndim != 4 or frames.shape[3] != 3:
            raise ValueError("frames: field 'shape' must be [T, H, W, 3] (RGB, channels last), "
                             f"got {tuple(frames.shape)}")
        if frames.shape[0] == 0 or frames.shape[1] == 0 or frames.shape[2] == 0:
            raise ValueError(f"frames: field 'shape' is {tuple(frames.shape)}: "
                             "a video needs frames of at least one pixel")
        size = (int(frames.shape[1]), int(frames.shape[2]))
        count = int(frames.shape[0])
    else:
        if not isinstance(frames, Sequence) or len(frames) == 0:
            raise ValueError("frames: expected a uint8 [T, H, W, 3] tensor or a non-empty list of frames")
        sizes = [_image_size(f, "frame", i) for i, f in enumerate(frames)]
        for i, s in enumerate(sizes):
            if s != sizes[0]:
                _fail("frame", i, "size", f"is {s[0]}x{s[1]} but frame 0 is {sizes[0][0]}x{sizes[0][1]}; "
                      "a video's frames share one size")
        size, count = sizes[0], len(frames)
    if size[0] * size[1] > cfg.source_pixel_limit:
        raise ValueError(f"frames: field 'size' is {size[0]}x{size[1]} (height x width) = {size[0] * size[1]:,} "
                         f"pixels per frame, above the limit of {cfg.source_pixel_limit:,} "
                         "(PreprocessConfig.source_pixel_limit); downscale the frames first")
    try:
        th, tw = smart_resize(*size, cfg.factor, lo, hi)
    except ValueError as e:
        raise ValueError(f"frames: field 'size' cannot be resized: {e}") from None
    keep = sample_video_indices(count, fps, cfg)
    padded_count = len(keep) + (-len(keep) % cfg.temporal_patch_size)
    pixels = padded_count * max(size[0] * size[1], th * tw)
    if pixels > cfg.video_pixel_limit:
        raise ValueError(f"frames: field 'shape' keeps {padded_count} frames of {size[0]}x{size[1]} (height x width; "
                         f"resized to {th}x{tw}) = {pixels:,} pixels, above the limit of {cfg.video_pixel_limit:,} "
                         "(PreprocessConfig.video_pixel_limit); lower max_frames, video_fps or max_pixels, "
                         "or split the video")
    Tp, P = cfg.temporal_patch_size, cfg.patch_size
    padded = keep + keep[-1:] * (-len(keep) % Tp)  # an odd count repeats the last frame
    return VideoPlan(frames, size, (th, tw), keep, padded, (len(padded) // Tp, th // P, tw // P))


def preprocess_video(frames, config: PreprocessConfig | None = None, *, fps: float | None = None,
                     min_pixels: int | None = None, max_pixels: int | None = None, device=None) -> VisionInputs:
    """One video to ``pixel_values`` and one ``grid_thw`` row, as Qwen3-Omni processes a video.

    Args:
        frames: a uint8 tensor or array ``[T, H, W, 3]`` (RGB; may live on the device), or a list of
            frames (PIL images or uint8 ``[H, W, 3]``), all of one size.
        fps: the frames' rate; frames are then sampled by ``sample_video_indices``. None: the frames
            are already sampled (all kept, thinned to ``max_frames``).
        min_pixels, max_pixels: override the config's per-frame budget (``video_min_pixels``,
            ``video_max_pixels``).

    Returns:
        ``VisionInputs`` with ``pixel_values [t*h*w, C*Tp*P*P]``, ``grid_thw [(t, h, w)]`` where
        ``t = ceil(kept / Tp)`` (an odd count repeats the last kept frame), ``frame_indices``.

    Raises:
        ValueError: naming the frame index and field, before any work.
    """
    from .staging import Stager

    cfg = config or PreprocessConfig()
    plan = plan_video(frames, cfg, fps, min_pixels, max_pixels)
    device = _resolve_device(device, [frames] if isinstance(frames, torch.Tensor) else frames)
    stager = Stager(torch.uint8, device, cfg.pin_host_inputs)
    plan.stage(stager)
    stager.send()
    return VisionInputs(plan.finish(stager, cfg, device), [plan.grid], [plan.size], plan.keep)
