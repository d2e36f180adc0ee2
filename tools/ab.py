"""``omnienc ab``: A/B of the runtime's optimizations against the eager baseline, same run, same card.

Variants (each on the same random real-size weights, same inputs already on the GPU):
    native_eager          the encoders called directly, one call per workload (no buckets, no graphs)
    sdpa_eager            native_eager with per-segment SDPA attention (HF's strategy) instead of varlen
    bucket_eager          the runtime's bucket path without CUDA graphs (same plans and buffers)
    graphs                the runtime with CUDA graphs and every default (what ships)
    graphs_unbatched      graphs, but each request of a workload encoded in its own call (no packing)
    graphs_torch_rotary   graphs with the vision rotary in plain PyTorch instead of the Triton kernel
    graphs_unfused_qkv    graphs with the audio q/k/v projections as three GEMMs instead of one
    graphs_conv_frontend  graphs with the audio front-end as three cuDNN convolutions in NCHW
    graphs_compiled       graphs over ``compile_blocks()`` (torch.compile of the per-block math)
    graphs_pad1024        graphs with vision padding cut into 1024-token attention segments instead
                          of 256 (fewer segment slots per bucket, more attention work on padding)
    graphs_every_bucket   graphs for every bucket of the grid, its ``graphs_up_to`` ignored (the
                          default grid otherwise runs vision packs above 3000 patches eagerly)
    graphs_compiled_audio graphs with only the audio encoder's block math compiled
    graphs_maxseq1024     DIAGNOSTIC, not a valid setting: vision graphs captured with FlashAttention's
                          max_seqlen capped at 1024 instead of the bucket size; measures what the
                          bucket-wide bound costs; skipped (nan) where a frame exceeds 1024 patches
Timing: CUDA events, median over repeats after warm-up.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

WORKLOADS = {
    "image448": ("vision", [[[1, 28, 28]]]),
    "image720p": ("vision", [[[1, 46, 80]]]),
    "images8x448": ("vision", [[[1, 28, 28]]] * 8),
    "video16x448": ("vision", [[[8, 28, 28]]]),
    "audio10s": ("audio", [[1000]]),
    "audio30s": ("audio", [[3000]]),
    "audios8x10s": ("audio", [[1000]] * 8),
}
VARIANTS = ("native_eager", "sdpa_eager", "bucket_eager", "graphs", "graphs_unbatched", "graphs_torch_rotary",
            "graphs_unfused_qkv", "graphs_conv_frontend", "graphs_compiled", "graphs_pad1024", "graphs_every_bucket",
            "graphs_compiled_audio", "graphs_maxseq1024")


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("ab", help="A/B the runtime's optimizations (GPU)", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma list (default: all, as above)")
    p.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma list (default: all): {','.join(WORKLOADS)}")
    p.add_argument("--repeats", type=int, default=50, help="timed calls per cell (default 50)")
    p.add_argument("--grid", help="bucket grid YAML (default: packaged)")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.set_defaults(func=run)
    return p


def median_ms(fn, repeats: int, warmup: int = 3) -> float:
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[len(times) // 2]


def make_requests(vis, aud, workload, device):
    import torch

    from ..runtime import AudioRequest, VisionRequest

    modality, items = WORKLOADS[workload]
    if modality == "vision":
        return [VisionRequest(torch.randn(sum(t * h * w for t, h, w in g), vis.in_features, device=device),
                              torch.tensor(g)) for g in items]
    return [AudioRequest(torch.randn(aud.config.num_mel_bins, sum(f), device=device), torch.tensor(f)) for f in items]


def unfused_attn_in(x, ln_w, ln_b, qkv_w, qkv_b, num_heads: int, eps: float):
    """The audio attention input with q, k and v as three GEMMs (the A/B's "before")."""
    import torch.nn.functional as F

    L = x.shape[0]
    h = F.layer_norm(x, (x.shape[-1],), ln_w, ln_b, eps)
    return tuple(F.linear(h, w, b).view(L, num_heads, -1) for w, b in zip(qkv_w.chunk(3), qkv_b.chunk(3)))


def conv_front_end(aud):
    """The audio front-end as three cuDNN convolutions on NCHW input (the A/B's "before")."""
    import torch
    import torch.nn.functional as F

    def front_end(chunks, conv_valid):
        x = chunks[:, None].to(aud.dtype)
        for i, conv in enumerate((aud.conv2d1, aud.conv2d2, aud.conv2d3)):
            x = conv(x)
            keep = torch.arange(x.shape[-1], device=x.device) < conv_valid[:, i : i + 1]
            x = F.gelu(x) * keep[:, None, None, :].to(x.dtype)
        C, ch, f, t = x.shape
        return x.permute(0, 3, 1, 2).reshape(C, t, ch * f)

    return front_end


def run(args) -> int:
    import torch

    from ..encoders.audio import attn_in as a_in, attn_out_mlp as a_out
    from ..encoders.vision import attn_in as v_in, attn_out_mlp as v_out
    from ..runtime import EncoderRuntime, VisionRequest
    from .capture import load_grid
    from .models import build_encoders

    if not torch.cuda.is_available():
        raise SystemExit("omnienc ab: needs a CUDA device")
    device = torch.device("cuda")
    grid = load_grid(args.grid)
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"omnienc ab: unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    workloads = args.workloads.split(",")
    vis, aud = build_encoders(None, device, "bfloat16", "real")
    reqs = {w: make_requests(vis, aud, w, device) for w in workloads}
    default_front_end = aud.front_end

    def direct(w):
        rs = reqs[w]
        if isinstance(rs[0], VisionRequest):
            px = torch.cat([r.pixel_values for r in rs])
            return lambda: vis(px, torch.cat([r.grid_thw for r in rs]))
        feats = torch.cat([r.input_features for r in rs], 1)
        lens = torch.cat([r.feature_lens for r in rs])
        return lambda: aud(feats, lens)

    results: dict[str, dict[str, float]] = {w: {} for w in workloads}
    extra: dict[str, float] = {}
    with torch.inference_mode():
        for variant in variants:
            vis.block_fns, aud.block_fns = (v_in, v_out), (a_in, a_out)
            vis.attn_backend = aud.attn_backend = "varlen"
            vis.rotary_backend = "auto"
            aud.front_end = default_front_end
            if variant == "sdpa_eager":
                vis.attn_backend = aud.attn_backend = "sdpa"
            elif variant == "graphs_compiled_audio":
                t0 = time.perf_counter()
                aud.compile_blocks()
                extra["compile_audio_setup_s"] = time.perf_counter() - t0
            elif variant == "graphs_torch_rotary":
                vis.rotary_backend = "torch"
            elif variant == "graphs_unfused_qkv":
                aud.block_fns = (unfused_attn_in, a_out)
            elif variant == "graphs_conv_frontend":
                aud.front_end = conv_front_end(aud)
            elif variant == "graphs_compiled":
                t0 = time.perf_counter()
                vis.compile_blocks()
                aud.compile_blocks()
                extra["compile_setup_s"] = time.perf_counter() - t0
            if variant in ("native_eager", "sdpa_eager"):
                for w in workloads:
                    results[w][variant] = median_ms(direct(w), args.repeats)
                continue
            from ..encoders import vision as vision_mod
            from ..runtime import runtime as runtime_mod

            pad = 1024 if variant == "graphs_pad1024" else 256
            vision_mod.PAD_SEGMENT_TOKENS = runtime_mod.PAD_SEGMENT_TOKENS = pad
            variant_grid = grid
            if variant == "graphs_every_bucket":
                variant_grid = dataclasses.replace(grid, **{
                    m: dataclasses.replace(getattr(grid, m), graphs_up_to=None)
                    for m in ("vision", "audio") if getattr(grid, m) is not None
                })
            rt = EncoderRuntime(vision=vis, audio=aud, grid=variant_grid, device=device,
                                use_cuda_graphs=variant != "bucket_eager")
            if variant == "graphs_maxseq1024":
                for bg in rt.vision.buckets.values():
                    bg.plan.max_seqlen = min(bg.plan.max_seqlen, 1024)
            info = rt.capture(progress=False)
            extra[f"{variant}_capture_s"] = info["capture_s"]
            extra[f"{variant}_graph_memory_mib"] = info["graph_memory_bytes"] / 2**20
            for w in workloads:
                modality, items = WORKLOADS[w]
                if variant == "graphs_maxseq1024" and modality == "vision" and any(
                    h * w_ > 1024 for g in items for _, h, w_ in g
                ):
                    continue  # a frame longer than the cap: the diagnostic would compute a wrong result
                if variant == "graphs_unbatched":
                    fn = lambda: [rt.encode([r]) for r in reqs[w]]  # noqa: E731
                else:
                    fn = lambda: rt.encode(reqs[w])  # noqa: E731
                results[w][variant] = median_ms(fn, args.repeats)
            vision_mod.PAD_SEGMENT_TOKENS = runtime_mod.PAD_SEGMENT_TOKENS = 256
            del rt
            torch.cuda.empty_cache()
    aud.front_end = default_front_end
    card = torch.cuda.get_device_name(device)
    print(f"A/B on {card}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}; median ms over {args.repeats} repeats")
    print("| workload | " + " | ".join(variants) + " |")
    print("|---|" + "---:|" * len(variants))
    for w in workloads:
        print(f"| {w} | " + " | ".join(f"{results[w].get(v, float('nan')):.3f}" for v in variants) + " |")
    for k, v in extra.items():
        print(f"{k}: {v:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"card": card, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
                       "results": results, "extra": extra}, f, indent=2)
    return 0
