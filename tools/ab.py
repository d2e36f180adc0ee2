"""``omnienc ab``: A/B of the runtime's optimizations against what they replace, same run, same card.

Every variant is built from real constructor and grid parameters (``with_options`` views of the same
encoders, ``EncoderRuntime`` arguments, grid fields), on the same random real-size weights and the
same inputs already on the GPU. Every variant is built first, then timed in rounds that alternate
the variants (each round: every workload, every variant, a few calls after a warm-up call), so a
slow spell of the host or the card falls on all of them alike. Timing: CUDA events around each call;
the median of all rounds' calls.

Variants retired after their A/B (results in docs/BENCHMARKS.md): stacked vs three audio q/k/v GEMMs,
GEMM vs cuDNN first audio convolution, compiled audio blocks alone, the max_seqlen diagnostic.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from dataclasses import dataclass, field

from .workloads import NEVER_REPEATED, WORKLOADS

@dataclass(frozen=True)
class Variant:
    """How one column is built.

    Attributes:
        what: one line for ``--help``.
        direct: call the encoders directly, one call per workload (no runtime).
        unbatched: one ``encode`` per request instead of one per workload.
        vision, audio: ``with_options`` of each encoder (e.g. ``attn_backend``, ``rotary_backend``).
        runtime: ``EncoderRuntime`` keyword arguments (e.g. ``use_cuda_graphs``, ``attention``).
        every_bucket: capture every bucket (the grid's ``graphs_up_to`` removed).
        compiled: ``compile_blocks()`` on both encoders.
    """

    what: str
    direct: bool = False
    unbatched: bool = False
    vision: dict = field(default_factory=dict)
    audio: dict = field(default_factory=dict)
    runtime: dict = field(default_factory=dict)
    every_bucket: bool = False
    compiled: bool = False


VARIANTS = {
    "native_eager": Variant("the encoders called directly, one call per workload (no buckets, no graphs)", direct=True),
    "sdpa_eager": Variant("native_eager with per-segment SDPA attention (HF's strategy) instead of varlen",
                          direct=True, vision={"attn_backend": "sdpa"}, audio={"attn_backend": "sdpa"}),
    "bucket_eager": Variant("the runtime's bucket path without CUDA graphs (same plans and buffers)",
                            runtime={"use_cuda_graphs": False}),
    "graphs": Variant("the runtime with CUDA graphs and every default (what ships)"),
    "graphs_unbatched": Variant("graphs, each request of a workload encoded in its own call (no packing)",
                                unbatched=True),
    "graphs_torch_rotary": Variant("graphs with the vision rotary in PyTorch instead of the Triton kernel",
                                   vision={"rotary_backend": "torch"}),
    "graphs_pad1024": Variant("graphs with vision padding in 1024-token attention segments instead of 256",
                              vision={"pad_segment_tokens": 1024}),
    "graphs_every_bucket": Variant("graphs for every bucket of the grid, its graphs_up_to ignored", every_bucket=True),
    "graphs_compiled": Variant("graphs over compile_blocks() (torch.compile of the per-block math)", compiled=True),
    "graphs_unfused": Variant("graphs with residual add, LayerNorm and GELU as separate passes (no fused ops)",
                              vision={"fusion": ("torch", "torch")}, audio={"fusion": ("torch", "torch", "torch")}),
    "graphs_front_unfused": Variant("graphs with the audio conv front-end as separate passes (unfold + linear, "
                                    "GELU, mask)", audio={"fusion": ("auto", "auto", "torch")}),
    "graphs_gelu_torch": Variant("graphs with fused add+LayerNorm but the vision GELU as its own pass (no epilogue)",
                                 vision={"fusion": ("auto", "torch")}),
    "graphs_gelu_triton": Variant("graphs with fc1 unbiased and bias+GELU as one Triton pass (both encoders)",
                                  vision={"fusion": ("auto", "triton")}, audio={"fusion": ("auto", "triton")}),
    "graphs_fastest": Variant("graphs with each bucket's attention chosen by measurement (FA2 varlen or cuDNN)",
                              runtime={"attention": "fastest"}),
    "graphs_cudnn": Variant("graphs with cuDNN attention everywhere", runtime={"attention": "cudnn"}),
    "graphs_exact": Variant("graphs with exact-layout graphs (a repeated pack layout captured and replayed "
                            "unpadded; off by default)", runtime={"exact_graphs": True}),
    "graphs_eager_varlen": Variant("graphs with uncaptured runs on FA2 varlen (no cuDNN: no dense runs, no varlen "
                                   "cuDNN for big calls)", runtime={"eager_attention": "varlen"}),
    "graphs_no_eager_cudnn": Variant("graphs with big uncaptured vision calls on FA2 varlen, not cuDNN varlen",
                                     runtime={"eager_cudnn_tokens": 0}),
    "graphs_no_graph_cudnn": Variant("graphs with big vision graph buckets on FA2 varlen, not cuDNN varlen",
                                     runtime={"graph_cudnn_tokens": 0}),
    "graphs_dense_after_8": Variant("graphs with uncaptured shapes of equal segments dense from their 8th sighting "
                                    "(off by default)", runtime={"dense_after": 8}),
    "graphs_eager_dense": Variant("graphs with every uncaptured run dense (cuDNN per run of equal lengths), any layout, no admission",
                                  runtime={"eager_attention": "dense"}),
    "graphs_no_merge": Variant("graphs with a launch's eager packs each run alone (not as one eager call)",
                               runtime={"eager_merge": 0}),
}
DEFAULT_VARIANTS = ("native_eager", "graphs", "graphs_exact", "graphs_unfused", "graphs_gelu_torch",
                    "graphs_gelu_triton", "graphs_fastest", "graphs_every_bucket")


def register(subparsers) -> argparse.ArgumentParser:
    lines = [__doc__, "Variants:"] + [f"  {k:22s}{v.what}" for k, v in VARIANTS.items()]
    p = subparsers.add_parser("ab", help="A/B the runtime's optimizations (GPU)", description="\n".join(lines),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                   help=f"comma list (default: {','.join(DEFAULT_VARIANTS)}; 'all' for every one)")
    p.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma list (default: all): {','.join(WORKLOADS)}")
    p.add_argument("--repeats", type=int, default=50, help="timed calls per cell, over all rounds (default 50)")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds the calls are spread over (default 5)")
    p.add_argument("--grid", help="bucket grid YAML (default: packaged)")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.set_defaults(func=run)
    return p


def sample_ms(fn, repeats: int, warmup: int = 1) -> list[float]:
    """``repeats`` timings of ``fn`` in ms (CUDA events, each call waited for) after ``warmup`` calls."""
    import torch

    from ..cuda import elapsed_ms

    for _ in range(warmup):
        fn()
    device = torch.device("cuda", torch.cuda.current_device())
    return [elapsed_ms(fn, device) for _ in range(repeats)]


def runtime_fn(rt, requests, unbatched: bool):
    """``rt.encode`` of the workload's requests together, or one call per request (``unbatched``)."""
    if unbatched:
        return lambda: [rt.encode([r]) for r in requests]
    return lambda: rt.encode(requests)


def direct_fn(vis, aud, inputs):
    """One eager call of each encoder on the workload's requests of its modality, concatenated."""

    def fn():
        if inputs.vision is not None:
            vis(inputs.vision[0], inputs.vision[1])
        if inputs.audio is not None:
            aud(inputs.audio[0], inputs.audio[1])

    return fn


def run(args) -> int:
    import torch

    from ..runtime import EncoderRuntime
    from .capture import load_grid
    from .models import build_encoders
    from .workloads import all_workloads, make_inputs

    if not torch.cuda.is_available():
        raise SystemExit("omnienc ab: needs a CUDA device")
    device = torch.device("cuda")
    grid = load_grid(args.grid)
    variants = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"omnienc ab: unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    workloads = args.workloads.split(",")
    unknown = sorted(set(workloads) - set(WORKLOADS))
    if unknown:
        raise SystemExit(f"omnienc ab: unknown workloads {unknown}; choose from {', '.join(WORKLOADS)}")
    base_vis, base_aud = build_encoders(None, device, "bfloat16", "real")
    table = all_workloads()
    inputs = {w: make_inputs(table[w], base_vis.config, base_aud.config, device, torch.bfloat16) for w in workloads}
    extra: dict[str, float] = {}
    fns: dict[str, dict] = {}  # variant -> workload -> a call doing the workload once
    exact: dict[str, object] = {}  # variant -> its runtime, where it has exact graphs (off for the mixes)
    keep = []  # the variants' runtimes, alive until every round is done
    with torch.inference_mode():
        for name in variants:
            v = VARIANTS[name]
            vis, aud = base_vis.with_options(**v.vision), base_aud.with_options(**v.audio)
            if v.compiled:
                t0 = time.perf_counter()
                vis.compile_blocks()
                aud.compile_blocks()
                extra[f"{name}_compile_s"] = time.perf_counter() - t0
            if v.direct:
                fns[name] = {w: direct_fn(vis, aud, inputs[w]) for w in workloads}
                continue
            variant_grid = grid
            if v.every_bucket:
                variant_grid = dataclasses.replace(grid, **{
                    m: dataclasses.replace(getattr(grid, m), graphs_up_to=None)
                    for m in ("vision", "audio") if getattr(grid, m) is not None
                })
            rt = EncoderRuntime(vision=vis, audio=aud, grid=variant_grid, device=device, **v.runtime)
            info = rt.capture(progress=False)
            keep.append(rt)
            extra[f"{name}_capture_s"] = info["capture_s"]
            extra[f"{name}_graph_memory_mib"] = info["graph_memory_bytes"] / 2**20

            fns[name] = {w: runtime_fn(rt, inputs[w].requests, v.unbatched) for w in workloads}
            if rt.exact_graphs:
                exact[name] = rt
        rounds = max(1, args.rounds)
        per_round = max(1, -(-args.repeats // rounds))
        samples = {w: {name: [] for name in variants} for w in workloads}
        for r in range(rounds):
            for w in workloads:
                for name in variants:
                    if name in exact:
                        exact[name].exact_graphs = w not in NEVER_REPEATED
                    samples[w][name] += sample_ms(fns[name][w], per_round, warmup=3 if r == 0 else 1)
    results = {w: {name: statistics.median(ts) for name, ts in row.items()} for w, row in samples.items()}
    card = torch.cuda.get_device_name(device)
    print(f"A/B on {card}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}; median ms of "
          f"{per_round * rounds} calls in {rounds} alternating rounds")
    print("| workload | " + " | ".join(variants) + " |")
    print("|---|" + "---:|" * len(variants))
    for w in workloads:
        print(f"| {w} | " + " | ".join(f"{results[w].get(v, float('nan')):.3f}" for v in variants) + " |")
    for k, val in extra.items():
        print(f"{k}: {val:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"card": card, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
                       "variants": {k: VARIANTS[k].what for k in variants}, "rounds": rounds,
                       "results": results, "samples_ms": samples, "extra": extra},
                      f, indent=2)
    return 0
