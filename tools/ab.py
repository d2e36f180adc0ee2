"""``omnienc ab``: A/B of the runtime's optimizations against the eager baseline, same run, same card.

Variants (each on the same random real-size weights, same inputs already on the GPU):
    native_eager      the encoders called directly, one call per workload (no buckets, no graphs)
    bucket_eager      the runtime's bucket path without CUDA graphs (same plans and buffers)
    graphs            the runtime with CUDA graphs (the default)
    graphs_compiled   graphs over ``compile_blocks()`` (torch.compile of the per-block math)
    sdpa_eager        the encoders with the per-segment SDPA backend (HF's attention strategy)
Timing: CUDA events, median over repeats after warm-up.
"""

from __future__ import annotations

import argparse
import json
import time

WORKLOADS = {
    "image448": ("vision", [[[1, 28, 28]]]),
    "images8x448": ("vision", [[[1, 28, 28]]] * 8),
    "video16x448": ("vision", [[[8, 28, 28]]]),
    "audio10s": ("audio", [[1000]]),
    "audio30s": ("audio", [[3000]]),
    "audios8x10s": ("audio", [[1000]] * 8),
}
VARIANTS = ("native_eager", "sdpa_eager", "bucket_eager", "graphs", "graphs_compiled")


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("ab", help="A/B the runtime's optimizations (GPU)", description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    p.add_argument("--repeats", type=int, default=50)
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
    workloads = args.workloads.split(",")
    vis, aud = build_encoders(None, device, "bfloat16", "real")
    reqs = {w: make_requests(vis, aud, w, device) for w in workloads}

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
            if variant == "sdpa_eager":
                vis.attn_backend = aud.attn_backend = "sdpa"
            if variant == "graphs_compiled":
                t0 = time.perf_counter()
                vis.compile_blocks()
                aud.compile_blocks()
                extra["compile_setup_s"] = time.perf_counter() - t0
            if variant in ("native_eager", "sdpa_eager"):
                for w in workloads:
                    results[w][variant] = median_ms(direct(w), args.repeats)
                continue
            rt = EncoderRuntime(vision=vis, audio=aud, grid=grid, device=device,
                                use_cuda_graphs=variant != "bucket_eager")
            info = rt.capture(progress=False)
            extra[f"{variant}_capture_s"] = info["capture_s"]
            extra[f"{variant}_graph_memory_mib"] = info["graph_memory_bytes"] / 2**20
            for w in workloads:
                results[w][variant] = median_ms(lambda: rt.encode(reqs[w]), args.repeats)
            del rt
            torch.cuda.empty_cache()
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
            json.dump({"card": card, "torch": torch.__version__, "results": results, "extra": extra}, f, indent=2)
    return 0
