"""Session 7, GPU call 1 (scratch): where each bench workload's time goes now, and what an
exact-fit CUDA graph of an uncaptured layout would give."""
import os, time, statistics, json, collections, torch
from omnienc.tools.models import build_encoders
from omnienc.tools.workloads import all_workloads, make_inputs
from omnienc.runtime import EncoderRuntime
from omnienc.runtime.graphs import capture, upload
from omnienc.tools.floor import measure
from omnienc.encoders.attention import cudnn_available

dev = torch.device("cuda")
vis, aud = build_encoders(None, dev, "bfloat16", "real")
rt = EncoderRuntime(vis, aud); rt.capture(progress=False)
W = all_workloads()
part = os.environ.get("PART", "AB")
res = {}


def med(fn, n=30, w=5):
    return measure(fn, dev, n, w, 2.0).median_ms


def host_ms(fn, n=20):
    ts = []
    for _ in range(n):
        torch.cuda.synchronize(); t0 = time.perf_counter(); fn(); ts.append((time.perf_counter() - t0) * 1e3)
    torch.cuda.synchronize()
    return statistics.median(ts)


def cat(name):
    n = name.lower()
    if any(s in n for s in ("flash", "fmha", "sdpa", "attention", "attn")):
        return "attn"
    if "conv" in n or "implicit" in n or ("fprop" in n):
        return "conv"
    if any(s in n for s in ("gemm", "nvjet", "cutlass", "xmma", "cublas")):
        return "gemm"
    if "norm" in n:
        return "norm"
    if "gelu" in n:
        return "gelu"
    return "other"


def profile(fn, n=5):
    from torch.profiler import profile as P, ProfilerActivity
    fn(); torch.cuda.synchronize()
    with P(activities=[ProfilerActivity.CUDA]) as p:
        for _ in range(n):
            fn()
        torch.cuda.synchronize()
    per = collections.defaultdict(lambda: [0.0, 0])
    for e in p.events():
        if e.device_type.name == "CUDA":
            per[e.name][0] += e.device_time_total / n
            per[e.name][1] += 1 / n
    cats = collections.defaultdict(float)
    for k, (t, c) in per.items():
        cats[cat(k)] += t
    top = sorted(per.items(), key=lambda kv: -kv[1][0])[:12]
    return sum(cats.values()) / 1e3, {k: v / 1e3 for k, v in cats.items()}, [(k[:90], round(t, 1), round(c, 1)) for k, (t, c) in top], sum(c for t, c in per.values())


names = ["image448", "audio10s", "image720p", "images8x448", "video16x448", "audios8x10s", "mixed32"]
inputs = {n: make_inputs(W[n], vis.config, aud.config, dev, torch.bfloat16) for n in names}
if "A" in part:
    print("== A: rt.encode: wall ms, host ms, GPU kernel ms by category, kernels per call", flush=True)
    for n in names:
        reqs = inputs[n].requests
        f = lambda: rt.encode(reqs)
        wall = med(f); host = host_ms(lambda: rt.launch(reqs))
        gpu, cats, top, count = profile(f)
        res[n] = dict(wall=wall, host=host, gpu=gpu, cats=cats, top=top, kernels=count)
        print(f"{n:12s} wall {wall:7.2f} launch-host {host:6.2f} gpu {gpu:7.2f} kernels {count:6.0f} | "
              + " ".join(f"{k} {v:.2f}" for k, v in sorted(cats.items(), key=lambda kv: -kv[1])), flush=True)
        for k, t, c in top:
            print(f"      {t:9.1f} us  x{c:6.1f}  {k}")

if "B" in part:
    print("== B: exact-fit graphs (ms): rt.encode | eager run of the encoder | graph replay per backend", flush=True)
    backends = ["varlen", "dense"] + (["cudnn"] if cudnn_available() else [])
    for n in names[:-1]:
        inp = inputs[n]
        reqs = inp.requests
        row = {"rt": med(lambda: rt.encode(reqs))}
        if inp.vision is not None:
            px, grid, _ = inp.vision
            hplan = vis.plan(grid)
            plan = upload(hplan, dev)
            x = px.clone()
            enc = lambda b: vis.run(x, plan, b)
        else:
            feats, lens, _ = inp.audio
            hplan = aud.plan(lens)
            plan = upload(hplan, dev)
            m = rt.audio.spec
            shapes = [[int(t)] for t in lens.tolist()]
            from omnienc.runtime.requests import AudioRequest
            rq = [AudioRequest(r.input_features, r.feature_lens) for r in reqs]
            x = m.input_buffer(sum(m.rows(s) for s in shapes), dev)
            m.fill(rq, shapes, x)
            enc = lambda b: aud.run(x, plan, b)
        with torch.inference_mode():
            row["eager_varlen"] = med(lambda: enc("varlen"))
            for b in backends:
                try:
                    g, outs = capture(lambda: enc(b))
                    row[f"graph_{b}"] = med(g.replay)
                    del g, outs
                except Exception as e:
                    row[f"graph_{b}"] = f"fail {type(e).__name__}: {str(e)[:80]}"
                torch.cuda.synchronize()
        res[n + "_exact"] = row
        print(f"{n:12s} " + " ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)

os.makedirs(os.environ.get("OUT", "out"), exist_ok=True)
json.dump(res, open(os.path.join(os.environ.get("OUT", "out"), "s7_probe.json"), "w"), indent=1, default=str)
