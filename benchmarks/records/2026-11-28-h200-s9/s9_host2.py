"""Session 9, GPU call 2 (scratch): what each host step of a one-request launch costs on the GPU host.
(1) single torch/CUDA calls the launch path makes, median of 2000; (2) a launch's marks around each
of its steps (exact-layout replays, warm)."""
import statistics, time, threading, collections, functools, torch
from omnienc.tools.models import build_encoders
from omnienc.tools.workloads import all_workloads, make_inputs
from omnienc.runtime import EncoderRuntime, lane as lane_mod, runtime as rt_mod
dev = torch.device("cuda")
ns = time.perf_counter_ns
def med_us(fn, n=2000):
    ts = []
    for _ in range(n):
        t0 = ns(); fn(); ts.append(ns() - t0)
    torch.cuda.synchronize()
    return statistics.median(ts) / 1e3
x = torch.randn(16, device=dev); fl = torch.ones(196, dtype=torch.bool, device=dev)
big = torch.randn(4, 256, 2048, device=dev, dtype=torch.bfloat16)
ev = torch.cuda.Event(enable_timing=True); ev.record()
lock = threading.Lock()
def ctx():
    with torch.cuda.device(dev): pass
def inf():
    with torch._C._InferenceMode(True): pass
def lk():
    with lock: pass
def pinned_copy():
    h = torch.empty(fl.shape, dtype=torch.bool, pin_memory=True); h.copy_(fl, non_blocking=True)
g = torch.cuda.CUDAGraph(); s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
with torch.cuda.stream(s):
    x.add_(1)
    with torch.cuda.graph(g):
        for _ in range(10): x.add_(1)
torch.cuda.current_stream().wait_stream(s)
for name, fn in [("x.add_(1) (dispatch baseline)", lambda: x.add_(1)),
                 ("Event(enable_timing) + record", lambda: torch.cuda.Event(enable_timing=True).record()),
                 ("record on a held event", lambda: ev.record()),
                 ("event.query()", lambda: ev.query()),
                 ("torch.empty pinned 196 bool", lambda: torch.empty(fl.shape, dtype=torch.bool, pin_memory=True)),
                 ("pinned empty + D2H copy", pinned_copy),
                 ("narrow_copy [4,196,2048] of [4,256,2048]", lambda: big.narrow_copy(1, 0, 196)),
                 ("unbind(0) of 4", lambda: big.unbind(0)),
                 ("torch.cuda.device ctx", ctx), ("InferenceMode guard", inf), ("threading.Lock", lk),
                 ("replay of a 10-kernel graph", g.replay)]:
    print(f"{name:45s} {med_us(fn):7.2f} us", flush=True)

vis, aud = build_encoders(None, dev, "bfloat16", "real")
rt = EncoderRuntime(vis, aud); rt.capture(progress=False)
W = all_workloads()
marks = []
def wrap(owner, attr, label):
    f = getattr(owner, attr)
    @functools.wraps(f)
    def w(*a, **k):
        marks.append((label, 0, ns()))
        try:
            return f(*a, **k)
        finally:
            marks.append((label, 1, ns()))
    setattr(owner, attr, w)
for owner, attr in [(rt_mod.EncoderRuntime, "launch"), (lane_mod.Lane, "run"), (lane_mod.Lane, "_drain_timings"),
                    (lane_mod.Lane, "run_pack"), (lane_mod.Lane, "_exact"), (lane_mod.Lane, "_rows_out"),
                    (torch.cuda.CUDAGraph, "replay")]:
    wrap(owner, attr, attr)
for spec in (rt.vision.spec, rt.audio.spec):
    wrap(spec, "fill", "fill")
for name in ("image448", "audio10s", "audios8x10s"):
    reqs = make_inputs(W[name], vis.config, aud.config, dev, torch.bfloat16).requests
    for _ in range(4):
        rt.encode(reqs)
    seg = collections.defaultdict(list)
    for _ in range(100):
        torch.cuda.synchronize(); shapes = rt.validate(reqs)
        marks.clear(); b = rt.launch(reqs, shapes); m = list(marks); b.result()
        t0 = m[0][2]
        prev = t0
        for label, io, t in m:  # time since the previous mark, labelled by this mark
            seg[f"{'->' if io == 0 else '<-'}{label}"].append((t - prev) / 1e3); prev = t
        seg["total"].append((m[-1][2] - t0) / 1e3)
    order = []
    for label, io, _ in m:
        k = f"{'->' if io == 0 else '<-'}{label}"
        if k not in order: order.append(k)
    print(name, " ".join(f"{k} {statistics.median(seg[k]):.1f}" for k in order), f"| total {statistics.median(seg['total']):.1f} us", flush=True)
