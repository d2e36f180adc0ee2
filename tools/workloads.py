"""The workloads of ``omnienc bench``: fixed request mixes by name, their inputs, and the
preprocessing its raw columns time.

A workload is requests submitted together (sizes in patches of 16 px and mel frames of 10 ms);
``make_inputs`` makes its tensors once: runtime requests (tensors on the device, grids and lengths on
the host), one HF call per request, and each modality's requests concatenated. ``raw_items`` makes a
workload's raw media; ``transformers_preprocess`` and ``omnienc_preprocess`` turn them into inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# numpy, torch and the floor's helpers are imported where used: `omnienc bench --help` and
# `omnienc ab --help` read this module's names without them.

WORKLOADS = ("image224", "image448", "image720p", "images8x448", "video16x448", "audio10s", "audio30s",
             "audios8x10s", "mixed32", "raw_image448", "raw_audio10s", "raw_mixed32")
# Raw workloads: the same requests as their ready twin, starting from raw media in host memory.
RAW_OF = {"raw_image448": "image448", "raw_audio10s": "audio10s", "raw_mixed32": "mixed32"}
MIXED_SEED = 0  # tracegen seed of the mixed32 workload (fixed: the mix is the same in every run)
# Mixes of many users' requests: such a pack does not come back in serving, so the runtime runs these
# workloads with exact graphs off (timing repeats a workload: a mix would replay its exact layout's
# graph from its second call on, which serving would not see).
NEVER_REPEATED = frozenset({"mixed32", "raw_mixed32"})


@dataclass(frozen=True)
class Workload:
    """Requests submitted together: ``("vision", ((t, h, w), ...))`` or ``("audio", (frames, ...))``.
    ``raw``: the requests start as raw media in host memory (``raw_items``)."""

    name: str
    description: str
    requests: tuple[tuple[str, tuple], ...]
    raw: bool = False

    def items(self, modality: str) -> list:
        """All items of one modality: (t, h, w) grids or frame counts, in request order."""
        return [x for kind, items in self.requests if kind == modality for x in items]

    @property
    def modalities(self) -> list[str]:
        return [m for m in ("vision", "audio") if self.items(m)]

    def summary(self, n_window: int = 50) -> dict:
        from omnienc.tools.floor import audio_chunks_tokens, vision_patches

        frames = self.items("audio")
        chunks, tokens = audio_chunks_tokens(frames, n_window)
        return {
            "requests": len(self.requests),
            "vision_requests": sum(k == "vision" for k, _ in self.requests),
            "audio_requests": sum(k == "audio" for k, _ in self.requests),
            "vision_patches": vision_patches(self.items("vision")),
            "vision_frames": sum(t for t, _, _ in self.items("vision")),
            "audio_clips": len(frames),
            "audio_frames": sum(frames),
            "audio_chunks": chunks,
            "audio_tokens": tokens,
        }

def mixed_requests(n: int = 32, seed: int = MIXED_SEED) -> tuple[tuple[str, tuple], ...]:
    """The first ``n`` requests of ``omnienc tracegen --rate 20 --seed <seed>`` (chat images, short
    videos, speech clips)."""
    from omnienc.tools.tracegen import generate_trace

    seconds = 10.0
    while True:
        records = generate_trace(seconds=seconds, rate=20.0, seed=seed)
        if len(records) >= n:
            break
        seconds *= 2
    return tuple(
        ("vision", tuple(r.grid_thw)) if r.modality == "vision" else ("audio", tuple(r.frames)) for r in records[:n]
    )

def all_workloads() -> dict[str, Workload]:
    """The benchmark's workloads, by name (sizes in patches of 16 px and mel frames of 10 ms)."""
    img = lambda h, w: ("vision", ((1, h, w),))  # noqa: E731
    aud = lambda frames: ("audio", (frames,))  # noqa: E731
    mixed = mixed_requests()
    kinds = [k for k, _ in mixed]
    ready = {
        w.name: w
        for w in (
            Workload("image224", "1 image 224x224 px, grid [1,14,14]", (img(14, 14),)),
            Workload("image448", "1 image 448x448 px, grid [1,28,28]", (img(28, 28),)),
            Workload("image720p", "1 image 1280x736 px, grid [1,46,80]", (img(46, 80),)),
            Workload("images8x448", "8 requests of 1 image 448x448 px, submitted together", (img(28, 28),) * 8),
            Workload("video16x448", "1 video, 16 frames 448x448 px, grid [8,28,28]", (("vision", ((8, 28, 28),)),)),
            Workload("audio10s", "1 audio clip of 10 s (1000 mel frames)", (aud(1000),)),
            Workload("audio30s", "1 audio clip of 30 s (3000 mel frames)", (aud(3000),)),
            Workload("audios8x10s", "8 requests of one 10 s clip, submitted together", (aud(1000),) * 8),
            Workload(
                "mixed32",
                f"32 concurrent requests from `omnienc tracegen --rate 20 --seed {MIXED_SEED}` "
                f"({kinds.count('vision')} vision: images and videos; {kinds.count('audio')} audio: speech)",
                mixed,
            ),
        )
    }
    raw = {name: Workload(name, f"{ready[twin].description}; from raw media in host memory (uint8 images and "
                          "frames, float32 16 kHz waveforms)", ready[twin].requests, raw=True)
           for name, twin in RAW_OF.items()}
    return ready | raw


# Pixel budgets of tracegen's mix (images, per video frame): raw sizes resize back to its grids.
RAW_IMAGE_PIXELS = (224 * 224, 1280 * 1280)
RAW_VIDEO_PIXELS = (128 * 128, 448 * 448)


def _raw_side(patches: int, delta: int, patch: int = 16, factor: int = 32) -> int:
    """A side ``delta`` px off the resized one (so a resize runs), rounding back to it."""
    side = patches * patch
    return side + delta if abs(delta) < factor // 2 else side


def raw_items(w: Workload, rng, patch: int = 16, merge: int = 2, hop: int = 160) -> list:
    """Raw media in host memory whose preprocessing gives exactly ``w``'s grids and frame counts:
    per image a uint8 ``[h*16 + 7, w*16 - 5, 3]`` array (resized back to the grid), per video
    ``2t`` such frames (``fps=None``: already sampled), per audio clip float32 16 kHz samples
    ``T * 160 + r`` (``r < 160``), fresh random values. Pixel budgets are tracegen's."""
    from omnienc.preprocess import RawAudio, RawImages, RawVideo, smart_resize

    factor = patch * merge
    scale = (patch / 16) ** 2  # tracegen's budgets are for 16 px patches

    def budget(base, shapes) -> tuple[int, int]:  # widened where needed so every grid is reachable
        exact = [h * wd * patch * patch for _, h, wd in shapes]
        return min(int(base[0] * scale), *exact), max(int(base[1] * scale), *exact)

    def size(h: int, wd: int, bounds) -> tuple[int, int]:
        H, W = _raw_side(h, 7, patch, factor), _raw_side(wd, -5, patch, factor)
        if smart_resize(H, W, factor, *bounds) != (h * patch, wd * patch):
            H, W = h * patch, wd * patch  # no nearby size rounds back: the exact one (no resize)
        return H, W

    items = []
    for kind, shapes in w.requests:
        if kind == "audio":
            items.append(RawAudio([(0.1 * rng.standard_normal(T * hop + int(rng.integers(0, hop))))
                                   .astype("float32") for T in shapes]))
        elif all(t == 1 for t, _, _ in shapes):
            b = budget(RAW_IMAGE_PIXELS, shapes)
            ims = [rng.integers(0, 256, (*size(h, wd, b), 3), dtype="uint8") for _, h, wd in shapes]
            items.append(RawImages(ims, *b))
        else:
            (t, h, wd), = shapes
            b = budget(RAW_VIDEO_PIXELS, shapes)
            frames = rng.integers(0, 256, (2 * t, *size(h, wd, b), 3), dtype="uint8")
            items.append(RawVideo(frames, None, *b))
    return items

@dataclass
class Inputs:
    """One workload's inputs, made once.

    Attributes:
        requests: runtime requests (tensors on the device, grids/lengths on the host).
        hf_calls: one ``(modality, input, grid_thw or feature_lens on the device)`` per request.
        vision: all vision requests concatenated: (pixel_values, grid_thw host, grid_thw device), or None.
        audio: all audio requests concatenated: (input_features, feature_lens host, device), or None.
        raw: for a raw workload, its raw items in host memory (``raw_items``); ``requests`` are then
            those items preprocessed on the device (float32), the input the runtime gets from them.
    """

    requests: list
    hf_calls: list
    vision: tuple | None
    audio: tuple | None
    raw: list | None = None


def make_inputs(w: Workload, vcfg, acfg, device: torch.device, dtype: torch.dtype, seed: int = 0) -> Inputs:
    import numpy as np
    import torch

    from omnienc.runtime import AudioRequest, VisionRequest, preprocess_requests
    from omnienc.tools.floor import vision_patches

    in_features = vcfg.in_channels * vcfg.temporal_patch_size * vcfg.patch_size**2
    requests, calls, raw = [], [], None
    if w.raw:
        raw = raw_items(w, np.random.default_rng(seed), vcfg.patch_size, vcfg.spatial_merge_size)
        requests = preprocess_requests(raw, device=device, config=preprocess_config(vcfg, acfg))
        for r in requests:
            if isinstance(r, VisionRequest):
                calls.append(("vision", r.pixel_values.to(dtype), r.grid_thw.to(device)))
            else:
                calls.append(("audio", r.input_features.to(dtype), r.feature_lens.to(device)))
    for kind, items in ([] if w.raw else w.requests):
        if kind == "vision":
            grid = torch.tensor(items, dtype=torch.int64)
            px = torch.randn(vision_patches(items), in_features, device=device, dtype=dtype)
            requests.append(VisionRequest(px, grid))
            calls.append(("vision", px, grid.to(device)))
        else:
            lens = torch.tensor(items, dtype=torch.int64)
            feats = torch.randn(acfg.num_mel_bins, sum(items), device=device, dtype=dtype)
            requests.append(AudioRequest(feats, lens))
            calls.append(("audio", feats, lens.to(device)))
    vision = audio = None
    vis = [r for r in requests if isinstance(r, VisionRequest)]
    aud = [r for r in requests if isinstance(r, AudioRequest)]
    if vis:
        grid = torch.cat([r.grid_thw for r in vis])
        vision = (torch.cat([r.pixel_values for r in vis]), grid, grid.to(device))
    if aud:
        lens = torch.cat([r.feature_lens for r in aud])
        audio = (torch.cat([r.input_features for r in aud], dim=1), lens, lens.to(device))
    return Inputs(requests, calls, vision, audio, raw)


def preprocess_config(vcfg, acfg):
    """The preprocessing settings of these encoder configs (Qwen3-Omni's defaults otherwise)."""
    from omnienc.preprocess import PreprocessConfig

    return PreprocessConfig.from_configs(vcfg, acfg)


def transformers_preprocess(items: list, cfg, cpu_threads_note: bool = False) -> Callable[[], list]:
    """What engines do today: transformers' processors on the CPU, one call per request. Returns a
    callable giving per item ``("vision", pixel_values, grid_thw)`` or ``("audio", features, lens)``
    (host tensors); None where a resampler is needed and scipy is missing."""
    import numpy as np
    import torch

    from omnienc.preprocess import (
        RawAudio, RawImages, make_feature_extractor, make_image_processor, transformers_video, whisper_features,
    )

    fe = make_feature_extractor(cfg)
    procs: dict = {}

    def proc(lo, hi):
        if (lo, hi) not in procs:
            procs[lo, hi] = make_image_processor(cfg, lo, hi)
        return procs[lo, hi]

    resample_poly = None
    if any(isinstance(it, RawAudio) and it.sampling_rate != cfg.sampling_rate for it in items):
        try:
            from scipy.signal import resample_poly
        except ImportError:
            return None

    def audio(x, rate):
        if rate != cfg.sampling_rate:
            from math import gcd

            g = gcd(cfg.sampling_rate, rate)
            x = resample_poly(x, cfg.sampling_rate // g, rate // g).astype(np.float32)
        return whisper_features(fe, x)

    def fn() -> list:
        out = []
        for it in items:
            if isinstance(it, RawImages):
                r = proc(it.min_pixels or cfg.min_pixels, it.max_pixels or cfg.max_pixels)(
                    images=list(it.images), return_tensors="pt")
                out.append(("vision", r["pixel_values"], r["image_grid_thw"]))
            elif isinstance(it, RawAudio):
                feats = [audio(x, it.sampling_rate) for x in it.waveforms]
                out.append(("audio", torch.cat(feats, 1), torch.tensor([f.shape[1] for f in feats])))
            else:  # RawVideo, frames already sampled
                px, grid = transformers_video(proc(it.min_pixels or cfg.video_min_pixels,
                                                   it.max_pixels or cfg.video_max_pixels), list(it.frames), cfg)
                out.append(("vision", px, torch.tensor([grid])))
        return out

    return fn


def omnienc_preprocess(items: list, cfg, device, graphs: bool | None = None) -> Callable[[], list]:
    """``preprocess_requests`` of every item at once on ``device`` (``graphs``: its argument)."""
    from omnienc.runtime import preprocess_requests

    return lambda: preprocess_requests(items, device=device, config=cfg, graphs=graphs)


__all__ = ["MIXED_SEED", "RAW_OF", "WORKLOADS", "Inputs", "Workload", "all_workloads", "make_inputs",
           "mixed_requests", "omnienc_preprocess", "preprocess_config", "raw_items", "transformers_preprocess"]
