"""Waveforms to the audio encoder's inputs, in torch, on any device.

The features equal what ``WhisperFeatureExtractor(feature_size=num_mel_bins, sampling_rate=16000,
hop_length=160, n_fft=400)`` gives when ``Qwen3OmniMoeProcessor`` calls it on one audio
(``padding=True``, ``truncation=False``, ``return_attention_mask=True``, valid frames kept):

1. mono float32 at 16 kHz (channels averaged; other rates resampled by ``resample``);
2. centered STFT: reflect-pad 200 samples each side, 400-sample periodic Hann windows every 160
   samples, power spectrum; ``n // 160`` frames are kept (the STFT's last frame is dropped);
3. Slaney mel filter bank (0-8000 Hz, Slaney-normalized) -> ``log10(max(x, 1e-10))``;
4. per audio: ``max(x, x.max() - 8)``, then ``(x + 4) / 4``.

Several audios run as one batch: their reflect-padded signals lie in one concatenated signal
(``MelLayout``), only each audio's own frames are taken (the samples between audios are never read),
and each audio's floor is its own maximum - 8, so its features do not depend on what it is batched
with. Output ``[num_mel_bins, sum T]``, audios in order.

Resampling is polyphase with a Kaiser-windowed sinc (the filter ``scipy.signal.resample_poly``
designs by default: cutoff at the lower Nyquist rate, 10 zero crossings each side of the output
rate's sinc, beta 5), zero-padded at the ends, ``ceil(n * target / rate)`` samples out; it is one
matrix product per audio.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from .config import PreprocessConfig
from .image import _from_numpy, _resolve_device
from .staging import Stager

RESAMPLE_ZEROS = 10  # zero crossings of the output-rate sinc on each side of a tap
RESAMPLE_BETA = 5.0  # Kaiser window shape
MAX_POLYPHASE = 1 << 22  # largest polyphase matrix (elements); rarer rates use a close fraction


@dataclass
class AudioInputs:
    """Encoder inputs of a batch of audios.

    Attributes:
        input_features: ``[num_mel_bins, sum T]`` float32 on the requested device, audios in order.
        feature_lens: ``T`` of each audio (``samples at 16 kHz // 160``), host ints.
        sample_rates: each audio's rate before resampling.
    """

    input_features: torch.Tensor
    feature_lens: list[int]
    sample_rates: list[int]


def _fail(index: int, field: str, problem: str):
    raise ValueError(f"waveform {index}: field '{field}' {problem}")


# --- mel filter bank --------------------------------------------------------------------------------


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear (3 mels per 200 Hz) below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    return np.where(f < 1000.0, 3.0 * f / 200.0, 15.0 + np.log(np.maximum(f, 1e-12) / 1000.0) * 27.0 / np.log(6.4))


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    return np.where(m < 15.0, 200.0 * m / 3.0, 1000.0 * np.exp((m - 15.0) * np.log(6.4) / 27.0))


def mel_filter_bank(num_mel_bins: int, n_fft: int = 400, sampling_rate: int = 16000,
                    f_min: float = 0.0, f_max: float = 8000.0) -> np.ndarray:
    """Triangular filters on the Slaney mel scale, Slaney-normalized (each filter's area ~ constant).

    Returns:
        float64 ``[n_fft // 2 + 1, num_mel_bins]``: filter k rises from edge k to edge k+1 and falls
        to edge k+2, the ``num_mel_bins + 2`` edges evenly spaced in mels from ``f_min`` to ``f_max``,
        and is scaled by ``2 / (edge[k+2] - edge[k])`` (Hz).
    """
    bins = np.linspace(0.0, sampling_rate // 2, n_fft // 2 + 1)  # FFT bin frequencies, Hz
    edges = _mel_to_hz(np.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), num_mel_bins + 2))
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    rise = (bins[:, None] - lower) / (center - lower)
    fall = (upper - bins[:, None]) / (upper - center)
    return np.maximum(0.0, np.minimum(rise, fall)) * (2.0 / (upper - lower))


@lru_cache(maxsize=16)
def _mel_constants(num_mel_bins: int, n_fft: int, sampling_rate: int, device: torch.device):
    """(filters ``[n_fft//2+1, mel]``, periodic Hann window ``[n_fft]``), float32 on ``device``."""
    filters = torch.from_numpy(mel_filter_bank(num_mel_bins, n_fft, sampling_rate).astype(np.float32))
    return filters.to(device), torch.hann_window(n_fft, periodic=True, dtype=torch.float32).to(device)


# --- resampling -------------------------------------------------------------------------------------


def _ratio(rate: int, target: int) -> tuple[int, int]:
    """``(up, down)``: ``target / rate`` in lowest terms, or the closest fraction whose polyphase
    matrix stays under ``MAX_POLYPHASE`` elements (rates like 44101 Hz; the time scale then errs by
    less than 1e-7)."""
    exact = Fraction(target, rate)
    for limit in (None, 4096, 1024, 256, 64):
        r = exact if limit is None else exact.limit_denominator(limit)
        up, down = r.numerator, r.denominator
        half = math.ceil(RESAMPLE_ZEROS * max(up, down) / up)
        if up * (down + 2 * half + 1) <= MAX_POLYPHASE:
            return up, down
    return up, down


def resampled_length(n: int, rate: int, target: int) -> int:
    """Samples out of ``resample``: ``ceil(n * target / rate)`` (as ``resample_poly``)."""
    return -(-n * target // rate)


@lru_cache(maxsize=16)
def _polyphase(up: int, down: int, device: torch.device) -> tuple[torch.Tensor, int]:
    """The polyphase matrix ``W [up, L]`` float32 on ``device`` and the left zero padding.

    Output ``m = q * up + r`` sits at input position ``m * down / up``; its taps are the input samples
    ``q * down - pad + j`` for ``j < L``, weighted by ``W[r, j]``: a Kaiser-windowed sinc of the input
    offset, cut off at the lower Nyquist rate, each row summing to 1 (unit gain at DC).
    """
    width = RESAMPLE_ZEROS * max(up, down) / up  # half-width of the filter in input samples
    pad = math.ceil(width)
    L = down + 2 * pad + 1
    r = np.arange(up)[:, None]
    t = np.arange(L)[None, :] - pad - r * down / up  # input offset of each tap, in input samples
    u = np.clip(t / width, -1.0, 1.0)
    taps = np.sinc(t * up / max(up, down)) * np.i0(RESAMPLE_BETA * np.sqrt(1.0 - u * u)) / np.i0(RESAMPLE_BETA)
    taps[np.abs(t) > width] = 0.0
    taps /= taps.sum(axis=1, keepdims=True)
    return torch.from_numpy(taps.astype(np.float32)).to(device), pad


def resample(x: torch.Tensor, rate: int, target: int = 16000) -> torch.Tensor:
    """Band-limited resampling of a 1-D float32 signal from ``rate`` to ``target`` Hz on its device.

    Returns:
        ``[ceil(len(x) * target / rate)]`` float32: one matrix product of overlapping input windows
        ``[Q, L]`` (a strided view of the zero-padded signal, step ``down``) with ``W^T [L, up]``.
    """
    n = x.shape[0]
    if rate == target:
        return x
    up, down = _ratio(rate, target)
    W, pad = _polyphase(up, down, x.device)
    m = resampled_length(n, rate, target)
    q = -(-m // up)
    L = W.shape[1]
    right = max(0, (q - 1) * down + L - pad - n)
    xp = F.pad(x[None], (pad, right))[0]
    windows = xp.unfold(0, L, down)[:q]  # [Q, L]
    return (windows @ W.T).reshape(-1)[:m]


# --- log-mel ----------------------------------------------------------------------------------------


@lru_cache(maxsize=16)
def _mel_pairs(num_mel_bins: int, n_fft: int, sampling_rate: int, device: torch.device) -> torch.Tensor:
    """The filter bank with each row repeated twice, ``[2 * (n_fft//2+1), mel]``: the power spectrum's
    ``re**2`` and ``im**2`` (interleaved, as ``view_as_real`` lays them out) meet the same filter, so
    ``|X|**2 @ filters`` is one matrix product of the squared real view."""
    filters, _ = _mel_constants(num_mel_bins, n_fft, sampling_rate, device)
    return filters.repeat_interleave(2, dim=0).contiguous()


@lru_cache(maxsize=16)
def _scalar(value: float, device: torch.device) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.float32).to(device)


@dataclass(frozen=True)
class MelLayout:
    """Where each audio's STFT frames sit in one concatenated, reflect-padded signal (host ints).

    Audio b (``n_b`` samples at 16 kHz) is reflect-padded by ``n_fft // 2`` on each side and written
    at ``offsets[b]`` (a multiple of the hop), so the whole signal is one ``unfold(n_fft, hop)`` view
    of frames; audio b's ``lens[b] = n_b // hop`` frames are rows ``rows[b] .. rows[b] + lens[b] - 1``
    of it. The rows between audios (a few per audio) are never read.
    """

    offsets: tuple[int, ...]
    lens: tuple[int, ...]
    length: int  # samples of the concatenated signal

    @classmethod
    def plan(cls, samples: Sequence[int], n_fft: int, hop: int) -> MelLayout:
        offsets, at = [], 0
        for n in samples:
            offsets.append(at)
            at = -(-(at + n + n_fft) // hop) * hop
        return cls(tuple(offsets), tuple(n // hop for n in samples), at)


def _frame_rows(layout: MelLayout, hop: int) -> list[int]:
    """Row of each audio's first frame in the unfolded signal."""
    return [o // hop for o in layout.offsets]


def log_mel_frames(signal: torch.Tensor, layout: MelLayout, config: PreprocessConfig | None = None,
                   index: torch.Tensor | None = None) -> torch.Tensor:
    """Whisper log-mel of every audio laid out in ``signal`` by ``layout``, in one batched pass.

    Args:
        signal: ``[layout.length]`` float32 on the device (the reflect-padded audios).
        index: for several audios, int64 ``[2, sum T]`` on the device: each kept frame's row in the
            unfolded signal, and its audio's number (``mel_index`` makes it on the host).

    Returns:
        ``[num_mel_bins, sum T]`` float32, audios in order. The kernels: (gather), window, rFFT,
        square, mel GEMM, clamp, log10, per-audio max, floor, affine: the same count for any number
        of audios.
    """
    cfg = config or PreprocessConfig()
    n_fft, hop, M = cfg.n_fft, cfg.hop_length, cfg.num_mel_bins
    device = signal.device
    _, window = _mel_constants(M, n_fft, cfg.sampling_rate, device)
    pairs = _mel_pairs(M, n_fft, cfg.sampling_rate, device)
    frames = signal.unfold(0, n_fft, hop)  # [R, n_fft], overlapping views
    B, total = len(layout.lens), sum(layout.lens)
    if B == 1:
        frames = frames[: layout.lens[0]]
    else:
        frames = frames.index_select(0, index[0])  # [sum T, n_fft], kept frames only
    spec = torch.fft.rfft(frames * window, n=n_fft)  # [sum T, n_fft // 2 + 1] complex
    power = torch.view_as_real(spec).square_().view(total, -1)  # [sum T, 2 * bins]: re^2, im^2
    logmel = (power @ pairs).clamp_(min=1e-10).log10_()  # [sum T, mel]
    if B == 1:
        floor = logmel.amax() - 8.0
    else:
        peak = torch.empty(B, dtype=logmel.dtype, device=device)
        peak.scatter_reduce_(0, index[1], logmel.amax(1), "amax", include_self=False)  # every audio has frames
        floor = (peak - 8.0)[index[1]][:, None]
    out = torch.empty(M, total, dtype=torch.float32, device=device)
    # (max(x, floor) + 4) / 4, written transposed: [mel, sum T]
    torch.add(_scalar(1.0, device), torch.maximum(logmel, floor).T, alpha=0.25, out=out)
    return out


def mel_index(layout: MelLayout, hop: int, out: torch.Tensor) -> None:
    """Fills host int64 ``out [2, sum T]`` for ``log_mel_frames``: frame rows and audio numbers."""
    o, at = out.numpy(), 0
    for b, (row, T) in enumerate(zip(_frame_rows(layout, hop), layout.lens)):
        o[0, at : at + T] = np.arange(row, row + T)
        o[1, at : at + T] = b
        at += T


def log_mel(waves: Sequence[torch.Tensor], config: PreprocessConfig | None = None) -> torch.Tensor:
    """Whisper log-mel features of 16 kHz mono audios, batched.

    Args:
        waves: 1-D float32 tensors on one device, each at least ``n_fft`` samples long.

    Returns:
        ``[num_mel_bins, sum(len // hop)]`` float32, audios in order (see the module docstring).
    """
    cfg = config or PreprocessConfig()
    device = waves[0].device
    stager, index_stager = (Stager(t, device, cfg.pin_host_inputs) for t in (torch.float32, torch.int64))
    finish, _ = stage_waveforms(list(waves), [cfg.sampling_rate] * len(waves), cfg, device, stager, index_stager)
    stager.send()
    index_stager.send()
    return finish()


# --- waveforms to features --------------------------------------------------------------------------


def _waveform(x, index: int) -> torch.Tensor:
    """Validates one waveform (no sample is read); returns it as a float tensor, 1-D or 2-D."""
    if isinstance(x, np.ndarray):
        if not np.issubdtype(x.dtype, np.floating):
            _fail(index, "dtype", f"must be floating point (samples in [-1, 1]), got {x.dtype}; "
                  "divide integer PCM by its full scale (e.g. 32768 for int16)")
        x = _from_numpy(np.ascontiguousarray(x))
    elif not isinstance(x, torch.Tensor):
        hint = " (a file name? decode it first: omnienc.preprocess.read_audio)" if isinstance(x, (str, bytes)) \
            or hasattr(x, "__fspath__") else ""
        _fail(index, "type", f"must be a torch.Tensor or a numpy array, got {type(x).__name__}{hint}")
    if not x.is_floating_point():
        _fail(index, "dtype", f"must be floating point (samples in [-1, 1]), got {x.dtype}; "
              "divide integer PCM by its full scale (e.g. 32768 for int16)")
    if x.dim() not in (1, 2):
        _fail(index, "shape", f"must be [samples] or [channels, samples], got {tuple(x.shape)}")
    if x.numel() == 0:  # before the orientation check: [1, 0] is empty, not transposed
        _fail(index, "shape", f"is {tuple(x.shape)}: the waveform has no samples")
    if x.dim() == 2 and x.shape[0] > x.shape[1]:
        _fail(index, "shape", f"is {tuple(x.shape)}: more channels than samples; pass [channels, samples] "
              "(soundfile returns [samples, channels]: transpose it)")
    return x


def _host_finite(x: torch.Tensor) -> bool:
    """Whether a host waveform's samples are finite: one pass in NumPy (host memory, so no device is
    involved). The sum of squares is finite when every sample is, unless a sample exceeds ~1e19
    (float32) in magnitude; the caller tells the two apart."""
    if x.dtype in (torch.float32, torch.float64):
        v = x.numpy().reshape(-1)
        return bool(np.isfinite(np.dot(v, v)))
    return bool(torch.isfinite(x.double().square().sum()))


def check_waveforms(waveforms, sampling_rate, config: PreprocessConfig) -> tuple[list[torch.Tensor], list[int]]:
    """Validates waveforms and their rates before any work; returns them as tensors and int rates.

    Raises:
        ValueError: naming the waveform index and field (type, dtype, shape, sampling_rate, length,
            samples). Samples of host waveforms are checked for NaN and infinity on the host;
            waveforms already on an accelerator are not read (that would wait for the device): a NaN
            there makes the request's features, and so its encoder output, non-finite, which the
            runtime reports as that request's ``ValueError`` on ``input_features``.
    """
    cfg = config
    if isinstance(waveforms, (torch.Tensor, np.ndarray, str, bytes)) or hasattr(waveforms, "__fspath__"):
        waveforms = [waveforms]  # one item (a file name's characters are no waveforms)
    if not isinstance(waveforms, Sequence) or len(waveforms) == 0:
        raise ValueError("waveforms: expected a non-empty list of waveforms")
    if isinstance(sampling_rate, (str, bytes)):
        raise ValueError(f"sampling_rate is the string {sampling_rate!r}; pass a whole number of Hz (e.g. 16000), "
                         "or one per waveform")
    one = not isinstance(sampling_rate, (Sequence, np.ndarray, torch.Tensor)) or (
        isinstance(sampling_rate, (np.ndarray, torch.Tensor)) and sampling_rate.ndim == 0)
    rates = [sampling_rate] * len(waveforms) if one else list(sampling_rate)
    if len(rates) != len(waveforms):
        raise ValueError(f"sampling_rate: {len(rates)} rates for {len(waveforms)} waveforms")
    xs = [_waveform(x, i) for i, x in enumerate(waveforms)]
    for i, (x, rate) in enumerate(zip(xs, rates)):
        if isinstance(rate, (np.ndarray, torch.Tensor)) and rate.ndim == 0:
            rate = rate.item()
        integral = isinstance(rate, (int, np.integer)) or (
            isinstance(rate, (float, np.floating)) and float(rate).is_integer())
        if isinstance(rate, (bool, np.bool_)) or not integral or rate < 1:
            got = f"the string {rate!r}" if isinstance(rate, (str, bytes)) else repr(rate)
            _fail(i, "sampling_rate", f"must be a positive whole number of Hz, got {got}")
        rates[i] = rate = int(rate)
        n16 = resampled_length(x.shape[-1], rate, cfg.sampling_rate)
        if n16 > cfg.audio_seconds_limit * cfg.sampling_rate:
            _fail(i, "length", f"is {x.shape[-1]:,} samples at {rate} Hz = {x.shape[-1] / rate:,.1f} s, above the "
                  f"limit of {cfg.audio_seconds_limit:g} s (PreprocessConfig.audio_seconds_limit); cut it into "
                  "shorter clips, or raise the limit where the machine holds it")
        if n16 < cfg.n_fft:
            _fail(i, "length", f"is {x.shape[-1]} samples at {rate} Hz ({n16} at {cfg.sampling_rate} Hz); "
                  f"an audio needs at least {cfg.n_fft} samples at {cfg.sampling_rate} Hz "
                  f"({1000 * cfg.n_fft / cfg.sampling_rate:g} ms)")
    for i, x in enumerate(xs):
        if x.device.type == "cpu" and not _host_finite(x):
            if not bool(torch.isfinite(x).all()):
                _fail(i, "samples", "holds NaN or infinite values")
            _fail(i, "samples", "holds values so large that their squares overflow; expected samples in [-1, 1]")
    return xs, rates


def preprocess_waveforms(waveforms, sampling_rate: int | Sequence[int] = 16000,
                         config: PreprocessConfig | None = None, *, device=None) -> AudioInputs:
    """Waveforms to ``input_features`` and ``feature_lens``, as Qwen3-Omni's processor.

    Args:
        waveforms: a list of float tensors or arrays, each ``[samples]`` (mono) or ``[channels,
            samples]`` (averaged to mono); tensors may already live on the device. A single waveform
            is taken as a list of one.
        sampling_rate: their rate in Hz (one for all, or one per waveform); others than 16000 are
            resampled on the device.
        device: where the work runs and the features live (default: the input tensors'
            accelerator, else the CPU).

    Returns:
        ``AudioInputs`` with ``input_features [num_mel_bins, sum T]`` and ``T = samples_16k // 160``.

    Work: waveforms travel through ``staging.Stager`` (16 kHz mono ones straight into their place
    of the concatenated signal, ``MelLayout``, their reflect padding gathered on the device); the
    others are averaged, resampled and padded on the device, one audio at a time; then one batched
    log-mel pass (``log_mel_frames``) for all. Nothing waits for the device.

    Raises:
        ValueError: see ``check_waveforms``, before any work.
    """
    cfg = config or PreprocessConfig()
    xs, rates = check_waveforms(waveforms, sampling_rate, cfg)
    device = _resolve_device(device, xs)
    stager, index_stager = (Stager(t, device, cfg.pin_host_inputs) for t in (torch.float32, torch.int64))
    feats, lens = stage_waveforms(xs, rates, cfg, device, stager, index_stager)
    stager.send()
    index_stager.send()
    return AudioInputs(feats(), lens, rates)


def stage_waveforms(xs: list[torch.Tensor], rates: list[int], cfg: PreprocessConfig, device: torch.device,
                    stager: Stager, index_stager: Stager):
    """Plans validated waveforms into ``stager`` (float32) and their frame and padding indices into
    ``index_stager`` (int64); returns ``(finish, lens)``: after both are sent, ``finish()`` runs the
    device work and returns ``[mel, sum T]`` features.

    The concatenated signal (``MelLayout``) is a run of adjacent slots: each 16 kHz mono waveform
    is copied straight into its place (from the host, or device to device), the reflect padding
    around it is gathered on the device from its own samples (one ``index_copy_`` for all of them);
    the others (other rates, several channels) are copied to their own slots, then averaged,
    resampled and padded on the device. The indices depend only on the sizes. Used by
    ``preprocess_waveforms`` and by ``preprocess_many``."""
    n_fft, hop, pad = cfg.n_fft, cfg.hop_length, cfg.n_fft // 2
    n16 = [resampled_length(x.shape[-1], r, cfg.sampling_rate) for x, r in zip(xs, rates)]
    layout = MelLayout.plan(n16, n_fft, hop)
    direct = [x.dim() == 1 and r == cfg.sampling_rate for x, r in zip(xs, rates)]
    ends = list(layout.offsets[1:]) + [layout.length]
    first = None
    for i, (x, n, o, end) in enumerate(zip(xs, n16, layout.offsets, ends)):
        left = stager.add_device((pad,))
        first = left if first is None else first
        stager.add(x) if direct[i] else stager.add_device((n,))
        stager.add_device((end - o - pad - n,))  # right padding, and the gap to the next audio
    raw = {i: stager.add(x) for i, x in enumerate(xs) if not direct[i]}
    total, reflected = sum(layout.lens), sum(direct)
    mel_slot = index_stager.add_raw((2, total)) if len(xs) > 1 else None
    pad_slot = index_stager.add_raw((2, 2 * pad * reflected)) if reflected else None

    def fill_indices() -> None:
        if mel_slot is not None:
            mel_index(layout, hop, index_stager.host(mel_slot))
        if pad_slot is not None:
            reflect_index([(o, n) for o, n, d in zip(layout.offsets, n16, direct) if d], pad,
                          index_stager.host(pad_slot))

    index_stager.on_pack(fill_indices)

    def finish() -> torch.Tensor:
        sig = stager.span(first, layout.length)
        if pad_slot is not None:
            where, source = index_stager.get(pad_slot)
            sig.index_copy_(0, where, sig.index_select(0, source))
        for i, (rate, o) in enumerate(zip(rates, layout.offsets)):
            if direct[i]:
                continue
            x = stager.get(raw[i])
            x = x.mean(0) if x.dim() == 2 else x
            w = resample(x, rate, cfg.sampling_rate)
            sig[o : o + w.shape[0] + n_fft].copy_(F.pad(w[None], (pad, pad), mode="reflect")[0])
        index = index_stager.get(mel_slot) if mel_slot is not None else None
        return log_mel_frames(sig, layout, cfg, index)

    return finish, list(layout.lens)


def reflect_index(placed: Sequence[tuple[int, int]], pad: int, out: torch.Tensor) -> None:
    """Fills host int64 ``out [2, 2 * pad * len(placed)]``: for each audio at ``(offset, n)`` in the
    signal (its samples at ``offset + pad ..``), the positions of its reflect padding (row 0) and
    the samples they mirror (row 1): ``pad`` on the left (``x[pad] .. x[1]``), ``pad`` on the right
    (``x[n-2] .. x[n-pad-1]``), as ``F.pad(mode="reflect")``."""
    o = out.numpy()
    k = np.arange(pad)
    for j, (at, n) in enumerate(placed):
        c = at + pad  # where x[0] sits
        left, right = slice(2 * pad * j, 2 * pad * j + pad), slice(2 * pad * j + pad, 2 * pad * (j + 1))
        o[0, left], o[1, left] = at + k, c + pad - k
        o[0, right], o[1, right] = c + n + k, c + n - 2 - k
