"""The GEMM floor of the encoders: every Linear, in forward order, replayed from one CUDA graph.

The floor is what the encoder's matrix multiplications alone cost at a workload's token counts, with
no launch overhead (one graph) and nothing else: attention, norms, activations, the audio
convolutions and the position/rotary tables come on top of it. Operands are random bf16 (never zeros);
every Linear has its own weight (weights are read from memory as in the model), inputs are one random
``[M, K]`` tensor per distinct shape.

``vision_gemms`` / ``audio_gemms`` list the shapes (pure, testable on the CPU: their FLOPs are the
encoder's matmul FLOPs); ``time_gemms`` replays them (one CUDA graph; on the CPU, eagerly);
``floor_ms`` is the one-call convenience. ``measure`` is the timing loop shared with ``bench``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from omnienc.cuda import elapsed_ms
from omnienc.encoders.audio import audio_output_length, conv_lens


@dataclass(frozen=True)
class Gemm:
    """One Linear: ``[m, k] @ [k, n]`` (+ bias), named after the module it stands for."""

    name: str
    m: int
    k: int
    n: int
    bias: bool = True

    @property
    def flops(self) -> int:
        return 2 * self.m * self.k * self.n


def vision_gemms(cfg, patches: int) -> list[Gemm]:
    """Every Linear of the vision encoder for ``patches`` patch tokens (all items of a pass), in order.

    Patch embedding and the blocks' qkv/proj/fc1/fc2 run on ``patches`` rows; each merger (the DeepStack
    ones after their block, then the final one) on ``patches / merge**2`` rows of ``merge**2 * hidden``.
    """
    unit = cfg.spatial_merge_size**2
    if patches % unit:
        raise ValueError(f"patches={patches} must be a multiple of {unit} (the merge window)")
    h, mlp, rows = cfg.hidden_size, cfg.intermediate_size, patches // unit
    merged, out = h * unit, cfg.out_hidden_size
    pixels = cfg.in_channels * cfg.temporal_patch_size * cfg.patch_size**2
    gemms = [Gemm("patch_embed.proj", patches, pixels, h)]
    deepstack = list(cfg.deepstack_visual_indexes)
    for i in range(cfg.depth):
        gemms += [
            Gemm(f"blocks.{i}.attn.qkv", patches, h, 3 * h),
            Gemm(f"blocks.{i}.attn.proj", patches, h, h),
            Gemm(f"blocks.{i}.mlp.linear_fc1", patches, h, mlp),
            Gemm(f"blocks.{i}.mlp.linear_fc2", patches, mlp, h),
        ]
        if i in deepstack:
            j = deepstack.index(i)
            gemms += [Gemm(f"merger_list.{j}.mlp.0", rows, merged, merged), Gemm(f"merger_list.{j}.mlp.2", rows, merged, out)]
    gemms += [Gemm("merger.mlp.0", rows, merged, merged), Gemm("merger.mlp.2", rows, merged, out)]
    return gemms


def audio_gemms(cfg, chunks: int, tokens: int) -> list[Gemm]:
    """Every Linear of the audio encoder for ``chunks`` 100-frame chunks and ``tokens`` kept tokens.

    ``conv_out`` runs on every chunk's full token grid (``chunks * 13`` rows, padding included, as the
    encoder does); the layers' qkv (q/k/v stacked, as the encoder runs them)/out_proj/fc1/fc2 and proj1/proj2 on the ``tokens`` kept tokens.
    """
    d, ffn = cfg.d_model, cfg.encoder_ffn_dim
    tpc = conv_lens(2 * cfg.n_window)[2]
    conv_in = cfg.downsample_hidden_size * conv_lens(cfg.num_mel_bins)[2]
    gemms = [Gemm("conv_out", chunks * tpc, conv_in, d, bias=False)]
    for i in range(cfg.encoder_layers):
        gemms += [Gemm(f"layers.{i}.self_attn.qkv", tokens, d, 3 * d), Gemm(f"layers.{i}.self_attn.out_proj", tokens, d, d)]
        gemms += [Gemm(f"layers.{i}.fc1", tokens, d, ffn), Gemm(f"layers.{i}.fc2", tokens, ffn, d)]
    gemms += [Gemm("proj1", tokens, d, d), Gemm("proj2", tokens, d, cfg.output_dim)]
    return gemms


def vision_patches(grids: Sequence[Sequence[int]]) -> int:
    """Patch tokens of items ``(t, h, w)``."""
    return sum(t * h * w for t, h, w in grids)


def audio_chunks_tokens(frames: Sequence[int], n_window: int = 50) -> tuple[int, int]:
    """(chunks, kept tokens) of audios of ``frames`` mel frames."""
    chunk = 2 * n_window
    return sum(math.ceil(T / chunk) for T in frames), sum(audio_output_length(T, n_window) for T in frames)


def gemm_flops(gemms: Sequence[Gemm]) -> int:
    return sum(g.flops for g in gemms)


# --- timing ---------------------------------------------------------------------------------------


@dataclass
class Timing:
    """Milliseconds per call over ``repeats`` timed calls (after warm-up)."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    repeats: int
    warmup: int

    def to_dict(self) -> dict:
        return asdict(self)


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile of an ascending list."""
    x = q * (len(sorted_values) - 1)
    lo = math.floor(x)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (x - lo)


def measure(
    fn: Callable[[], object],
    device: torch.device,
    repeats: int,
    warmup: int,
    budget_s: float | None = None,
    min_repeats: int = 5,
    full_warmup: bool = False,
) -> Timing:
    """Times ``fn`` call by call; returns median, p10, p90 over the timed calls.

    CUDA: each call starts on an idle device (synchronize), is bracketed by CUDA events and waited for,
    so host-side work that keeps the GPU waiting (launch overhead, host syncs) counts. CPU: wall clock.

    Args:
        repeats: timed calls (at most).
        warmup: untimed calls first (at least one if ``budget_s`` is set; warm-up stops early once it
            took a quarter of the budget, unless ``full_warmup``: then every one of them runs, e.g. to
            reach a steady state that needs so many calls).
        budget_s: if set, slow calls get fewer repeats: ``budget_s / (warm-up time per call)``, but
            never fewer than ``min(min_repeats, repeats)``.
    """
    def once() -> float:
        return elapsed_ms(fn, device)

    warm: list[float] = []
    want = max(warmup, 1 if budget_s is not None else 0)
    t0 = time.perf_counter()
    while len(warm) < want:
        warm.append(once())
        if budget_s is not None and not full_warmup and time.perf_counter() - t0 > budget_s / 4:
            break
    n = max(repeats, 1)
    if budget_s is not None:
        per_call_s = min(warm) / 1e3
        n = min(n, max(min_repeats, int(budget_s / max(per_call_s, 1e-6))))
    times = sorted(once() for _ in range(n))
    return Timing(
        median_ms=_quantile(times, 0.5),
        p10_ms=_quantile(times, 0.1),
        p90_ms=_quantile(times, 0.9),
        mean_ms=sum(times) / len(times),
        min_ms=times[0],
        repeats=len(times),
        warmup=len(warm),
    )


class GemmChain:
    """Random bf16 operands for ``gemms`` and a ``run()`` that does every product in order.

    Every Gemm gets its own weight ``[n, k]`` (and bias); inputs are shared per ``(m, k)``.
    """

    def __init__(self, gemms: Sequence[Gemm], device: torch.device, dtype: torch.dtype = torch.bfloat16):
        self.gemms = list(gemms)
        self.inputs: dict[tuple[int, int], torch.Tensor] = {}
        self.weights: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        for g in self.gemms:
            if (g.m, g.k) not in self.inputs:
                self.inputs[(g.m, g.k)] = torch.randn(g.m, g.k, device=device, dtype=dtype)
            w = torch.randn(g.n, g.k, device=device, dtype=dtype) * g.k**-0.5
            b = torch.randn(g.n, device=device, dtype=dtype) if g.bias else None
            self.weights.append((w, b))

    def run(self) -> tuple[torch.Tensor, ...]:
        out = None
        for g, (w, b) in zip(self.gemms, self.weights):
            out = F.linear(self.inputs[(g.m, g.k)], w, b)  # [m, n]
        return (out,)


def time_gemms(
    gemms: Sequence[Gemm],
    device: torch.device | str,
    repeats: int = 30,
    warmup: int = 3,
    budget_s: float | None = None,
) -> Timing:
    """Times the chain of ``gemms``: one CUDA graph replay per call on CUDA, an eager run elsewhere."""
    device = torch.device(device)
    gemms = [g for g in gemms if g.m > 0]
    if not gemms:
        return Timing(0.0, 0.0, 0.0, 0.0, 0.0, 0, 0)
    graph = None
    with torch.inference_mode():
        chain = GemmChain(gemms, device)
        try:
            if device.type == "cuda":
                from omnienc.cuda.graphs import capture

                graph, _ = capture(chain.run)
                torch.cuda.synchronize(device)
                return measure(graph.replay, device, repeats, warmup, budget_s)
            return measure(chain.run, device, repeats, warmup, budget_s)
        finally:
            del chain, graph  # free the operands and the graph's pool before the next section
            if device.type == "cuda":
                torch.cuda.empty_cache()


def floor_ms(modality: str, cfg, *counts: int, device: torch.device | str = "cuda", repeats: int = 30,
             warmup: int = 3) -> float:
    """Median ms of the GEMM floor of one encoder.

    Args:
        modality: ``"vision"`` (counts: patches) or ``"audio"`` (counts: chunks, tokens).
        cfg: the transformers encoder config.
    """
    if modality == "vision":
        gemms = vision_gemms(cfg, *counts)
    elif modality == "audio":
        gemms = audio_gemms(cfg, *counts)
    else:
        raise ValueError(f"unknown modality {modality!r}; use 'vision' or 'audio'")
    return time_gemms(gemms, device, repeats, warmup).median_ms


__all__ = [
    "Gemm",
    "GemmChain",
    "Timing",
    "audio_chunks_tokens",
    "audio_gemms",
    "floor_ms",
    "gemm_flops",
    "measure",
    "time_gemms",
    "vision_gemms",
    "vision_patches",
]
