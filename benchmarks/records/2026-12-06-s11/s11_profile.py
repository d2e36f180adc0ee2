"""Session 11: where each bench workload's time goes on the current code (what limits the missed
targets of issue 12), and mixed32's audio side run eagerly (one call with the vision call) vs replays.
PART=A: rt.encode per workload: wall, launch host, GPU kernel ms by category (torch profiler).
PART=B: mixed32, one process: native; runtime (default grid); runtime whose audio buckets run eagerly
        (audio graphs_up_to 1: a launch's audio packs merge into one eager call, as the native call)."""
import collections
import dataclasses
import os
import statistics
import time
import torch
from omnienc.tools.models import build_encoders
from omnienc.tools.workloads import all_workloads, make_inputs
from omnienc.runtime import BucketGrid, EncoderRuntime
from omnienc.tools.floor import measure

dev = torch.device("cuda")
vis, aud = build_encoders(None, dev, "bfloat16", "real")
W = all_workloads()
PART = os.environ.get("PART", "AB")


def kind(name):
    n = name.lower()
    if any(s in n for s in ("flash", "fmha", "sdpa", "attention", "attn")):
        return "attn"
    if "conv" in n or "implicit" in n or "fprop" in n:
        return "conv"
    if any(s in n for s in ("gemm", "nvjet", "cutlass", "xmma", "cublas")):
        return "gemm"
    if "norm" in n:
        return "norm"
    if "gelu" in n:
        return "gelu"
    if "rotary" in n:
        return "rotary"
    return "other"


def gpu_profile(fn, n=5):
    from torch.profiler import ProfilerActivity, profile
    fn(); torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as p:
        for _ in range(n):
            fn()
        torch.cuda.synchronize()
    cats, count = collections.defaultdict(float), 0
    for e in p.events():
        if e.device_type.name == "CUDA":
            cats[kind(e.name)] += e.device_time_total / n / 1e3
            count += 1
    return sum(cats.values()), dict(cats), count / n


def host_ms(fn, n=20):
    ts = []
    for _ in range(n):
        torch.cuda.synchronize(); t0 = time.perf_counter(); fn(); ts.append((time.perf_counter() - t0) * 1e3)
    torch.cuda.synchronize()
    return statistics.median(ts)


@torch.inference_mode()
def part_a():
    rt = EncoderRuntime(vis, aud); rt.capture(progress=False)
    print("== A: rt.encode: wall ms (median), launch host ms, GPU kernel ms by category, kernels per call", flush=True)
    for name in ("image448", "image720p", "images8x448", "video16x448", "audio10s", "audios8x10s", "mixed32"):
        x = make_inputs(W[name], vis.config, aud.config, dev, torch.bfloat16)
        rt.exact_graphs = name != "mixed32"  # as the bench
        f = lambda: rt.encode(x.requests)
        for _ in range(10):  # past exact captures and dense admissions
            f()
        wall = measure(f, dev, 20, 2, 3.0).median_ms
        host = host_ms(lambda: rt.launch(x.requests))
        gpu, cats, count = gpu_profile(f)
        print(f"{name:12s} wall {wall:7.2f} host {host:6.2f} gpu {gpu:7.2f} kernels {count:6.0f} | "
              + " ".join(f"{k} {v:.2f}" for k, v in sorted(cats.items(), key=lambda kv: -kv[1])), flush=True)
        if name == "mixed32":
            nf = lambda: (vis(x.vision[0], x.vision[1]), aud(x.audio[0], x.audio[1]))
            gpu, cats, count = gpu_profile(nf)
            print(f"{'  native':12s} wall {measure(nf, dev, 10, 2, 3.0).median_ms:7.2f} gpu {gpu:7.2f} kernels {count:6.0f} | "
                  + " ".join(f"{k} {v:.2f}" for k, v in sorted(cats.items(), key=lambda kv: -kv[1])), flush=True)


@torch.inference_mode()
def part_b():
    grid = BucketGrid.default()
    eager_audio = dataclasses.replace(grid, audio=dataclasses.replace(grid.audio, graphs_up_to=1))
    rts = {"default": EncoderRuntime(vis, aud), "audio_eager": EncoderRuntime(vis, aud, grid=eager_audio)}
    x = make_inputs(W["mixed32"], vis.config, aud.config, dev, torch.bfloat16)
    A = [r for r in x.requests if hasattr(r, "input_features")]
    fns = {"native": lambda: (vis(x.vision[0], x.vision[1]), aud(x.audio[0], x.audio[1])),
           "native_audio": lambda: aud(x.audio[0], x.audio[1])}
    for k, rt in rts.items():
        rt.capture(progress=False); rt.exact_graphs = False
        fns[k] = lambda rt=rt: rt.encode(x.requests)
        fns[k + "_audio"] = lambda rt=rt: rt.encode(A)
    res = {k: [] for k in fns}
    for f in fns.values():
        for _ in range(3):
            f()
    for rnd in range(4):
        for k, f in fns.items():
            res[k].append(measure(f, dev, 6, 1, 2.0).median_ms)
        print(f"round {rnd}: " + "  ".join(f"{k} {v[-1]:.2f}" for k, v in res.items()), flush=True)
    med = {k: statistics.median(v) for k, v in res.items()}
    print("median of rounds: " + " ".join(f"{k}={v:.2f}" for k, v in med.items()), flush=True)
    for k, rt in rts.items():
        a = rt.stats()["audio"]
        print(f"{k}: audio replays {a.get('replays')} eager runs {a.get('eager_runs')} merges {a.get('eager_merges')}", flush=True)


if "A" in PART:
    part_a()
if "B" in PART:
    part_b()
