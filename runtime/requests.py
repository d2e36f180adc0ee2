"""Request and output types of the runtime, and their validation.

Validation happens for every request of a call before any work, so one bad request fails the call
with a ``ValueError`` that names its index and field, and touches no buffer.
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
        ``PreprocessConfig`` (default Qwen3-Omni's). See ``omnienc.preprocess.preprocess_images``."""
        from omnienc.preprocess import preprocess_images

        out = preprocess_images(images, config, min_pixels=min_pixels, max_pixels=max_pixels, device=device)
        return cls(out.pixel_values, torch.tensor(out.grid_thw, dtype=torch.int64))

    @classmethod
    def from_video(cls, frames, *, fps=None, min_pixels=None, max_pixels=None, device=None,
                   config=None) -> VisionRequest:
        """One request holding one video (uint8 ``[T, H, W, 3]`` or a list of frames), sampled at
        ``fps`` and grouped in temporal pairs as Qwen3-Omni does. See
        ``omnienc.preprocess.preprocess_video``."""
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
        ``sampling_rate``), turned into Whisper log-mel features as Qwen3-Omni's processor does, on
        ``device``. See ``omnienc.preprocess.preprocess_waveforms``."""
        from omnienc.preprocess import preprocess_waveforms

        out = preprocess_waveforms(waveforms, sampling_rate, config, device=device)
        return cls(out.input_features, torch.tensor(out.feature_lens, dtype=torch.int64))


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


def _check_float(t, index: int, kind: str, field: str, ndim: int) -> None:
    if not isinstance(t, torch.Tensor):
        _fail(index, kind, field, f"must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        _fail(index, kind, field, f"must be a floating-point tensor, got {t.dtype}")
    if t.dim() != ndim:
        _fail(index, kind, field, f"must have {ndim} dimensions, got shape {tuple(t.shape)}")


class FiniteChecks:
    """Collects "all values finite" checks of many tensors and resolves them with one host sync per
    device (a per-request ``bool(...)`` would stall the GPU once per request)."""

    def __init__(self):
        self._pending: list[tuple[int, str, str, torch.Tensor]] = []

    def add(self, t: torch.Tensor, index: int, kind: str, field: str) -> None:
        if t.numel():
            self._pending.append((index, kind, field, torch.isfinite(t).all()))

    def resolve(self) -> None:
        """Raises for the first (lowest index) request holding NaN or infinite values."""
        by_device: dict[torch.device, list[int]] = {}
        for k, (*_, flag) in enumerate(self._pending):
            by_device.setdefault(flag.device, []).append(k)
        bad = []
        for ks in by_device.values():
            ok = torch.stack([self._pending[k][3] for k in ks]).cpu()
            bad += [self._pending[k] for k, good in zip(ks, ok.tolist()) if not good]
        self._pending.clear()
        if bad:
            index, kind, field, _ = min(bad, key=lambda b: b[0])
            _fail(index, kind, field, "holds NaN or infinite values")


def _check_finite(t: torch.Tensor, index: int, kind: str, field: str, checks: FiniteChecks | None) -> None:
    if checks is not None:
        checks.add(t, index, kind, field)
    elif t.numel() and not bool(torch.isfinite(t).all()):
        _fail(index, kind, field, "holds NaN or infinite values")


def _int_tensor(t, index: int, kind: str, field: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        _fail(index, kind, field, f"must be an integer torch.Tensor, got {type(t).__name__}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        _fail(index, kind, field, f"must be an integer tensor, got {t.dtype}")
    return t


def validate_vision(req, index: int, in_features: int, merge: int, checks: FiniteChecks | None = None) -> list[tuple[int, int, int]]:
    """Checks a ``VisionRequest``; returns its grid as host triples. With ``checks``, the finiteness
    check is deferred to ``checks.resolve()``."""
    kind = "VisionRequest"
    if not isinstance(req, VisionRequest):
        _fail(index, kind, "type", f"expected VisionRequest, got {type(req).__name__}")
    grid = _int_tensor(req.grid_thw, index, kind, "grid_thw")
    if grid.dim() != 2 or grid.shape[1] != 3 or grid.shape[0] == 0:
        _fail(index, kind, "grid_thw", f"must have shape [n, 3] with n >= 1, got {tuple(grid.shape)}")
    triples = [tuple(int(v) for v in row) for row in grid.tolist()]
    for j, (t, h, w) in enumerate(triples):
        if min(t, h, w) <= 0:
            _fail(index, kind, "grid_thw", f"item {j} is {(t, h, w)}: t, h and w must be positive")
        if h % merge or w % merge:
            _fail(index, kind, "grid_thw", f"item {j} is {(t, h, w)}: h and w must be multiples of {merge}")
    _check_float(req.pixel_values, index, kind, "pixel_values", 2)
    rows, dim = req.pixel_values.shape
    if dim != in_features:
        _fail(index, kind, "pixel_values", f"has {dim} values per patch, expected {in_features} (C*Tp*P*P)")
    need = sum(t * h * w for t, h, w in triples)
    if rows != need:
        _fail(index, kind, "pixel_values", f"has {rows} rows but grid_thw needs sum(t*h*w) = {need}")
    _check_finite(req.pixel_values, index, kind, "pixel_values", checks)
    return triples


def validate_audio(req, index: int, num_mel_bins: int, checks: FiniteChecks | None = None) -> list[int]:
    """Checks an ``AudioRequest``; returns its lengths as host ints (``checks``: as for vision)."""
    kind = "AudioRequest"
    if not isinstance(req, AudioRequest):
        _fail(index, kind, "type", f"expected AudioRequest, got {type(req).__name__}")
    lens = _int_tensor(req.feature_lens, index, kind, "feature_lens")
    if lens.dim() != 1 or lens.shape[0] == 0:
        _fail(index, kind, "feature_lens", f"must be a 1-D tensor of at least one length, got shape {tuple(lens.shape)}")
    lengths = [int(v) for v in lens.tolist()]
    if min(lengths) <= 0:
        _fail(index, kind, "feature_lens", f"lengths must be positive, got {lengths}")
    _check_float(req.input_features, index, kind, "input_features", 2)
    mel, T = req.input_features.shape
    if mel != num_mel_bins:
        _fail(index, kind, "input_features", f"must be [num_mel_bins={num_mel_bins}, T], got {tuple(req.input_features.shape)}")
    if sum(lengths) != T:
        _fail(index, kind, "feature_lens", f"add up to {sum(lengths)} but input_features has T = {T} frames")
    _check_finite(req.input_features, index, kind, "input_features", checks)
    return lengths
