"""Session 9: mixed32, the runtime with FlashAttention only for uncaptured runs (no dense) vs the
native encoders called once per modality: wall ms per side (vision requests alone, audio alone,
all), GPU kernel ms by category (torch profiler)."""
import collections, torch
from omnienc.tools.models import build_encoders
from omnienc.tools.workloads import all_workloads, make_inputs
from omnienc.tools.floor import measure
from omnienc.runtime import EncoderRuntime, lane as lane_mod
lane_mod.Lane.DENSE_SHAPES = 0
dev = torch.device("cuda")
vis, aud = build_encoders(None, dev, "bfloat16", "real")
rt = EncoderRuntime(vis, aud); rt.capture(progress=False); rt.exact_graphs = False
x = make_inputs(all_workloads()["mixed32"], vis.config, aud.config, dev, torch.bfloat16)
V = [r for r in x.requests if hasattr(r, "pixel_values")]; A = [r for r in x.requests if not hasattr(r, "pixel_values")]
def cat(n):
    n = n.lower()
    if any(s in n for s in ("flash", "fmha", "attention", "attn")): return "attn"
    if any(s in n for s in ("gemm", "nvjet", "cutlass", "xmma", "cublas")): return "gemm"
    if "conv" in n: return "conv"
    if "norm" in n: return "norm"
    return "other"
def prof(fn):
    from torch.profiler import profile as P, ProfilerActivity
    fn(); torch.cuda.synchronize()
    with P(activities=[ProfilerActivity.CUDA]) as p:
        fn(); torch.cuda.synchronize()
    c = collections.Counter(); k = 0
    for e in p.events():
        if e.device_type.name == "CUDA":
            c[cat(e.name)] += e.device_time_total / 1e3; k += 1
    return {a: round(b, 2) for a, b in c.items()}, k, round(sum(c.values()), 2)
@torch.inference_mode()
def main():
    fns = {"runtime vision": lambda: rt.encode(V), "native vision": lambda: vis(x.vision[0], x.vision[1]),
           "runtime audio": lambda: rt.encode(A), "native audio": lambda: aud(x.audio[0], x.audio[1]),
           "runtime all": lambda: rt.encode(x.requests),
           "native all": lambda: (vis(x.vision[0], x.vision[1]), aud(x.audio[0], x.audio[1]))}
    for rnd in range(2):
        for name, f in fns.items():
            t = measure(f, dev, 10, 2, 3.0).median_ms
            line = f"{name:15s} wall {t:7.2f} ms"
            if rnd == 1:
                cats, k, tot = prof(f); line += f"  kernels {k} GPU {tot} ms {cats}"
            print(line, flush=True)
    print(rt.stats()["audio"]["padded_share"] if "padded_share" in rt.stats()["audio"] else "")
main()
