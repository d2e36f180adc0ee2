"""Request and output types of the runtime, and their validation.

Validation of a request's structure (types, shapes, sizes: host metadata only) happens for every
request of a call before any work, so one bad request fails the call with a ``ValueError`` that names
its index and field, and touches no buffer. Finiteness of the inputs is checked before any work on
the CPU; on CUDA the runtime checks every output row on the device instead (no host sync), and a
request whose output is not finite fails on its own, naming its non-finite input field if any.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class VisionRequest:
    """Images and/or videos of one user request.

    Attributes:
        pixel_values: ``[sum(t*h*w), C*Tp*P*P]`` flattened patches in merge-window order (the HF
            image/video processor's output), float.
        grid_thw: ``[n, 3]`` integer grid per item, in patches.
    """

    pixel_values: torch.Tensor
    grid_thw: torch.Tensor

    @classmethod
    def from_images(cls, images, *, min_pixels=None, max_pixels=None, device=None, config=None) -> VisionRequest:
        """One request holding ``images`` (PIL images in any mode, or uint8 ``[H, W, 3]`` tensors),
        preprocessed as Qwen3-Omni's image processor on ``device``; grid rows in order. ``config``: a
        ``PreprocessConfig`` (default Qwen3-Omni's, with its limits: ``source_pixel_limit`` per image,
        ``pixel_limit`` on ``max_pixels``). Raises ``ValueError`` naming the image and field before
        any work. See ``omnienc.preprocess.preprocess_images``."""
        from omnienc.preprocess import preprocess_images

        out = preprocess_images(images, config, min_pixels=min_pixels, max_pixels=max_pixels, device=device)
        return cls(out.pixel_values, torch.tensor(out.grid_thw, dtype=torch.int64))

    @classmethod
    def from_video(cls, frames, *, fps=None, min_pixels=None, max_pixels=None, device=None,
                   config=None) -> VisionRequest:
        """One request holding one video (uint8 ``[T, H, W, 3]`` or a list of frames), sampled at
        ``fps`` and grouped in temporal pairs as Qwen3-Omni does. Refused before any work, with a
        ``ValueError`` naming the field, beyond ``config``'s ``source_pixel_limit`` (per frame) or
        ``video_pixel_limit`` (kept frames x pixels). See ``omnienc.preprocess.preprocess_video``."""
        from omnienc.preprocess import preprocess_video

        out = preprocess_video(frames, config, fps=fps, min_pixels=min_pixels, max_pixels=max_pixels, device=device)
        return cls(out.pixel_values, torch.tensor(out.grid_thw, dtype=torch.int64))


@dataclass
class AudioRequest:
    """One or more audios: ``input_features [mel, sum T]`` (float) and ``feature_lens [B]`` (int)."""

    input_features: torch.Tensor
    feature_lens: torch.Tensor

    @classmethod
    def from_waveforms(cls, waveforms, sampling_rate=16000, *, device=None, config=None) -> AudioRequest:
        """One request holding ``waveforms`` (float ``[samples]`` or ``[channels, samples]``, at
        ``sampling_rate``: a whole number of Hz, or one per waveform), turned into Whisper log-mel
        features as Qwen3-Omni's processor does, on ``device``. A waveform longer than ``config``'s
        ``audio_seconds_limit`` is refused before any work. See
        ``omnienc.preprocess.preprocess_waveforms``."""
        from omnienc.preprocess import preprocess_waveforms

        out = preprocess_waveforms(waveforms, sampling_rate, config, device=device)
        return cls(out.input_features, torch.tensor(out.feature_lens, dtype=torch.int64))


def preprocess_requests(items, *, device=None, config=None, graphs: bool | None = None) -> list:
    """Many requests from raw media in one pass: ``items`` are ``omnienc.preprocess.RawImages``,
    ``RawVideo`` and ``RawAudio`` (the arguments of ``from_images``, ``from_video`` and
    ``from_waveforms``); returns one ``VisionRequest`` / ``AudioRequest`` per item, in order, equal to
    what those constructors make, with one kernel group per image size, video and audio batch
    instead of one per request, and on CUDA one graph replay for a layout seen before (``graphs``;
    default on, see ``omnienc.preprocess.graphs``). A bad or oversized item raises
    ``ValueError("item k: ...")`` naming the request, its image, frame or waveform and the field,
    before any work. See ``omnienc.preprocess.preprocess_many``."""
    from omnienc.preprocess import AudioInputs, preprocess_many

    out = []
    for r in preprocess_many(items, config, device=device, graphs=graphs):
        if isinstance(r, AudioInputs):
            out.append(AudioRequest(r.input_features, torch.tensor(r.feature_lens, dtype=torch.int64)))
        else:
            out.append(VisionRequest(r.pixel_values, torch.tensor(r.grid_thw, dtype=torch.int64)))
    return out


@dataclass
class VisionOutput:
    """``embeds [sum(t*h*w)/4, out_hidden]`` and one tensor of the same shape per DeepStack layer."""

    embeds: torch.Tensor
    deepstack: list[torch.Tensor]


@dataclass
class AudioOutput:
    """``embeds [sum L, output_dim]``, the request's audios concatenated in order."""

    embeds: torch.Tensor


def _fail(index: int, kind: str, field: str, problem: str):
    raise ValueError(f"request {index} ({kind}): field '{field}' {problem}")


# Input tensors: these dtypes are cast to the encoder's when copied into its buffers (float8 is
# refused: no processor emits it and torch cannot check it for NaN), on these devices (``meta``
# tensors hold no data).
INPUT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
INPUT_DEVICES = ("cpu", "cuda")
INT_DTYPES = frozenset(d for d in vars(torch).values() if isinstance(d, torch.dtype)
                       and not (d.is_floating_point or d.is_complex or d == torch.bool))


def _check_device(t: torch.Tensor, index: int, kind: str, field: str) -> None:
    if t.device.type not in INPUT_DEVICES:
        _fail(index, kind, field, f"is on device '{t.device}'; pass a CPU or CUDA tensor")


def _check_float(t, index: int, kind: str, field: str, ndim: int) -> None:
    if not isinstance(t, torch.Tensor):
        _fail(index, kind, field, f"must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in INPUT_DTYPES:
        if not t.is_floating_point():
            _fail(index, kind, field, f"must be a floating-point tensor, got {t.dtype}")
        _fail(index, kind, field, f"has dtype {t.dtype}; use float16, bfloat16, float32 or float64 (cast it first)")
    if not (t.is_cuda or t.is_cpu):
        _check_device(t, index, kind, field)
    if len(t.shape) != ndim:
        _fail(index, kind, field, f"must have {ndim} dimensions, got shape {tuple(t.shape)}")


class NonFiniteOutput(RuntimeError):
    """A request whose inputs are finite but whose encoder output is not (e.g. float16 overflow)."""


def check_finite(t: torch.Tensor, index: int, kind: str, field: str) -> None:
    """Raises ``ValueError`` naming the request and field if ``t`` holds NaN or infinite values
    (reads ``t``: on a CUDA tensor this waits for the work that produces it)."""
    if t.numel() and not bool(torch.isfinite(t).all()):
        _fail(index, kind, field, "holds NaN or infinite values")


def _int_tensor(t, index: int, kind: str, field: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        _fail(index, kind, field, f"must be an integer torch.Tensor, got {type(t).__name__}")
    if t.dtype not in INT_DTYPES:
        _fail(index, kind, field, f"must be an integer tensor, got {t.dtype}")
    if not (t.is_cuda or t.is_cpu):
        _check_device(t, index, kind, field)
    return t


def validate_vision(req, index: int, in_features: int, merge: int,
                    finite: bool = True) -> list[tuple[int, int, int]]:
    """Checks a ``VisionRequest``; returns its grid as host triples. ``finite``: also check that the
    pixel values are finite (the runtime does so on the CPU; on CUDA it checks outputs instead)."""
    kind = "VisionRequest"
    if not isinstance(req, VisionRequest):
        _fail(index, kind, "type", f"expected VisionRequest, got {type(req).__name__}")
    grid = _int_tensor(req.grid_thw, index, kind, "grid_thw")
    shape = grid.shape
    if len(shape) != 2 or shape[1] != 3 or shape[0] == 0:
        _fail(index, kind, "grid_thw", f"must have shape [n, 3] with n >= 1, got {tuple(shape)}")
    triples = [tuple(row) for row in grid.tolist()]  # ints: grid is an integer tensor
    need = 0
    for j, (t, h, w) in enumerate(triples):
        if t <= 0 or h <= 0 or w <= 0:
            _fail(index, kind, "grid_thw", f"item {j} is {(t, h, w)}: t, h and w must be positive")
        if h % merge or w % merge:
            _fail(index, kind, "grid_thw", f"item {j} is {(t, h, w)}: h and w must be multiples of {merge}")
        need += t * h * w
    _check_float(req.pixel_values, index, kind, "pixel_values", 2)
    rows, dim = req.pixel_values.shape
    if dim != in_features:
        _fail(index, kind, "pixel_values", f"has {dim} values per patch, expected {in_features} (C*Tp*P*P)")
    if rows != need:
        _fail(index, kind, "pixel_values", f"has {rows} rows but grid_thw needs sum(t*h*w) = {need}")
    if finite:
        check_finite(req.pixel_values, index, kind, "pixel_values")
    return triples


def validate_audio(req, index: int, num_mel_bins: int, finite: bool = True) -> list[int]:
    """Checks an ``AudioRequest``; returns its lengths as host ints (``finite``: as for vision)."""
    kind = "AudioRequest"
    if not isinstance(req, AudioRequest):
        _fail(index, kind, "type", f"expected AudioRequest, got {type(req).__name__}")
    lens = _int_tensor(req.feature_lens, index, kind, "feature_lens")
    shape = lens.shape
    if len(shape) != 1 or shape[0] == 0:
        _fail(index, kind, "feature_lens", f"must be a 1-D tensor of at least one length, got shape {tuple(shape)}")
    lengths = lens.tolist()  # ints: an integer tensor
    if min(lengths) <= 0:
        _fail(index, kind, "feature_lens", f"lengths must be positive, got {lengths}")
    _check_float(req.input_features, index, kind, "input_features", 2)
    shape = req.input_features.shape
    mel, T = shape
    if mel != num_mel_bins:
        _fail(index, kind, "input_features", f"must be [num_mel_bins={num_mel_bins}, T], got {tuple(shape)}")
    total = sum(lengths)
    if total != T:
        _fail(index, kind, "feature_lens", f"add up to {total} but input_features has T = {T} frames")
    if finite:
        check_finite(req.input_features, index, kind, "input_features")
    return lengths
