"""Session 9, GPU call 1 (scratch): where a one-request launch's host time goes on the GPU host.

Per workload (exact-layout graph replays, warm): launch() host time split at the graph replay
(before / the replay call itself / after), and what the replay call costs against graphs of plain
kernels (straight-line, N nodes), to see whether the launch cost grows with node count here."""
import statistics, time, collections, torch
from omnienc.tools.models import build_encoders
from omnienc.tools.workloads import all_workloads, make_inputs
from omnienc.runtime import EncoderRuntime

dev = torch.device("cuda")
vis, aud = build_encoders(None, dev, "bfloat16", "real")
rt = EncoderRuntime(vis, aud); rt.capture(progress=False)
W = all_workloads()

marks = []
_replay = torch.cuda.CUDAGraph.replay


def replay(self):
    marks.append(time.perf_counter_ns())
    _replay(self)
    marks.append(time.perf_counter_ns())


torch.cuda.CUDAGraph.replay = replay


def kernels_of(fn):
    from torch.profiler import profile as P, ProfilerActivity
    fn(); torch.cuda.synchronize()
    with P(activities=[ProfilerActivity.CUDA]) as p:
        fn(); torch.cuda.synchronize()
    kinds = collections.Counter()
    for e in p.events():
        if e.device_type.name == "CUDA":
            n = e.name.lower()
            kinds["memcpy" if "memcpy" in n else "memset" if "memset" in n else "kernel"] += 1
    return dict(kinds)


for name in ("image448", "audio10s", "audios8x10s", "images8x448"):
    reqs = make_inputs(W[name], vis.config, aud.config, dev, torch.bfloat16).requests
    for _ in range(4):
        rt.encode(reqs)
    torch.cuda.synchronize()
    pre, rep, post, tot, val = [], [], [], [], []
    for _ in range(60):
        torch.cuda.synchronize()
        marks.clear()
        t0 = time.perf_counter_ns()
        shapes = rt.validate(reqs)
        t1 = time.perf_counter_ns()
        b = rt.launch(reqs, shapes)
        t2 = time.perf_counter_ns()
        b.result()
        if len(marks) == 2:
            pre.append((marks[0] - t1) / 1e3); rep.append((marks[1] - marks[0]) / 1e3); post.append((t2 - marks[1]) / 1e3)
        tot.append((t2 - t1) / 1e3); val.append((t1 - t0) / 1e3)
    m = statistics.median
    print(f"{name:12s} validate {m(val):6.1f} us  launch {m(tot):6.1f} = before replay {m(pre) if pre else -1:6.1f} "
          f"+ replay call {m(rep) if rep else -1:6.1f} + after {m(post) if post else -1:6.1f} us   "
          f"graph work {kernels_of(lambda: rt.encode(reqs))}", flush=True)

# Plain graphs: N straight-line kernels on one stream.
x = torch.randn(1024, device=dev)
for n in (10, 100, 300, 1000):
    g = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            x.add_(1.0)
        with torch.cuda.graph(g):
            for _ in range(n):
                x.add_(1.0)
    torch.cuda.current_stream().wait_stream(s)
    ts = []
    for _ in range(50):
        torch.cuda.synchronize()
        t0 = time.perf_counter_ns(); _replay(g); ts.append((time.perf_counter_ns() - t0) / 1e3)
    print(f"plain graph {n:5d} kernels: replay call {statistics.median(ts):7.1f} us", flush=True)
