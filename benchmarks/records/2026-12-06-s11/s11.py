"""Session 11: uncaptured big vision calls on cuDNN's varlen attention (rounded graph keys).
Variants: fa (before: dense from a shape's 8th sighting, else FlashAttention), cudnn (cuDNN varlen for
calls >= 8192 tokens, never dense), both (dense once admitted, else cuDNN varlen for big calls).
argv: mix            mixed32, one process, native + each variant's own runtime, alternating rounds
      tput VARIANT   the service's 2,000-request mix on one GPU, this variant, own process
      small          image720p, images8x448, video16x448: the cuDNN bound at 8192 (these calls keep
                     FlashAttention, then dense from a shape's 8th sighting) vs 2048 (cuDNN varlen)"""
import sys
import time
import torch
from omnienc.tools.models import build_encoders
from omnienc.runtime import EncoderRuntime

dev = torch.device("cuda")
VARIANTS = ("fa", "cudnn", "both")


def apply(rt, variant):
    lane = rt.vision
    if variant == "fa":
        lane.eager_cudnn_tokens = 0
    elif variant == "cudnn":
        lane.DENSE_SHAPES = 0
    return rt


def new_runtime(vis, aud, variant):
    rt = EncoderRuntime(vis, aud)
    rt.capture(progress=False)
    return apply(rt, variant)


@torch.inference_mode()
def mix(vis, aud):
    from omnienc.tools.workloads import all_workloads, make_inputs
    from omnienc.tools.floor import measure
    x = make_inputs(all_workloads()["mixed32"], vis.config, aud.config, dev, torch.bfloat16)
    rts = {v: new_runtime(vis, aud, v) for v in VARIANTS}
    for rt in rts.values():
        rt.exact_graphs = False  # as the bench runs mixed32
    fns = {"native": lambda: (vis(x.vision[0], x.vision[1]), aud(x.audio[0], x.audio[1]))}
    fns |= {v: (lambda rt=rt: rt.encode(x.requests)) for v, rt in rts.items()}
    # first calls of each (cuDNN graph builds: the frontend cache is per process, so 'both' after 'cudnn' reuses)
    for name, f in fns.items():
        ts = []
        for _ in range(3):
            torch.cuda.synchronize(); t0 = time.perf_counter(); f(); torch.cuda.synchronize()
            ts.append((time.perf_counter() - t0) * 1e3)
        print(f"first calls {name}: " + " ".join(f"{t:.1f}" for t in ts), flush=True)
    res = {k: [] for k in fns}
    for rnd in range(4):
        for name, f in fns.items():
            res[name].append(measure(f, dev, 6, 1, 2.0).median_ms)
        print(f"round {rnd}: " + "  ".join(f"{k} {v[-1]:.1f}" for k, v in res.items()), flush=True)
    for v, rt in rts.items():
        s = rt.stats()["vision"]
        print(f"{v}: eager attention {s['eager_attention']} dense shapes {s['dense_shapes']} merges {s['eager_merges']}", flush=True)
    first = {k: v[0] for k, v in res.items()}
    later = {k: sorted(v[1:])[1] for k, v in res.items()}
    for label, d in (("round 0 (calls 4-9: dense not yet admitted)", first), ("median of rounds 1-3", later)):
        print(label + ": " + " ".join(f"{k}={v:.1f} ({v / d['native']:.3f}x)" for k, v in d.items()), flush=True)


def tput(vis, aud, variant):
    from omnienc.tools.service_bench import throughput_run, trace_records, trace_requests, load_cost
    rt = new_runtime(vis, aud, variant)
    cost, _ = load_cost(None)
    reqs = trace_requests(trace_records(2000), vis, aud, True, 0)
    r = throughput_run([rt], reqs, max_wait_ms=2.0, max_batch=64, cost=cost)
    s = rt.stats()["vision"]
    print(f"variant={variant} {r['requests_per_s']:.1f} req/s  eager attention {s['eager_attention']} "
          f"dense shapes {s['dense_shapes']} merges {s['eager_merges']} eager runs {s['eager_runs']}", flush=True)
    try:
        import cudnn.sdpa.fwd.torch_op as op
        print(f"cuDNN frontend graphs cached: {len(op._graph_cache)}", flush=True)
    except Exception as e:  # noqa: BLE001
        print("no frontend cache:", e)


@torch.inference_mode()
def small(vis, aud):
    from omnienc.tools.workloads import all_workloads, make_inputs
    from omnienc.tools.floor import measure
    rts = {t: EncoderRuntime(vis, aud, eager_cudnn_tokens=t) for t in (8192, 2048)}
    for rt in rts.values():
        rt.capture(progress=False)
    for name in ("image720p", "images8x448", "video16x448"):
        x = make_inputs(all_workloads()[name], vis.config, aud.config, dev, torch.bfloat16)
        for rt in rts.values():
            rt.exact_graphs = False  # uncaptured runs only (the bench's exact graphs would replay from call 2)
        fns = {"native": lambda: vis(x.vision[0], x.vision[1])}
        fns |= {f"t{t}": (lambda rt=rt: rt.encode(x.requests)) for t, rt in rts.items()}
        res = {k: [] for k in fns}
        for rnd in range(4):  # round 0: calls 1-6 (FlashAttention for t8192), later rounds dense for it
            for k, f in fns.items():
                res[k].append(measure(f, dev, 6, 0 if rnd == 0 else 1, 2.0).median_ms)
        print(f"{name}: " + "  ".join(f"{k} " + "/".join(f"{v:.2f}" for v in vs) for k, vs in res.items()), flush=True)
    for t, rt in rts.items():
        print(f"t{t}: eager attention {rt.stats()['vision']['eager_attention']}", flush=True)


if __name__ == "__main__":
    vis, aud = build_encoders(None, dev, "bfloat16", "real")
    if sys.argv[1] == "mix":
        mix(vis, aud)
    elif sys.argv[1] == "small":
        small(vis, aud)
    else:
        tput(vis, aud, sys.argv[2])
