"""Host time of one launch on the GPU host, by Python function (cProfile), exact replays and bucket path."""
import cProfile, pstats, time, statistics, torch, io
from omnienc.tools.models import build_encoders
from omnienc.tools.workloads import all_workloads, make_inputs
from omnienc.runtime import EncoderRuntime
dev = torch.device("cuda")
vis, aud = build_encoders(None, dev, "bfloat16", "real")
rt = EncoderRuntime(vis, aud); rt.capture(progress=False)
W = all_workloads()
for name in ("audio10s", "audios8x10s", "image448", "images8x448"):
    reqs = make_inputs(W[name], vis.config, aud.config, dev, torch.bfloat16).requests
    for exact in (True, False):
        rt.exact_graphs = exact
        for _ in range(4):
            rt.encode(reqs)
        torch.cuda.synchronize()
        ts, vs = [], []
        for _ in range(30):
            torch.cuda.synchronize(); t0 = time.perf_counter(); shapes = rt.validate(reqs); t1 = time.perf_counter()
            b = rt.launch(reqs, shapes); t2 = time.perf_counter(); b.result()
            vs.append((t1 - t0) * 1e6); ts.append((t2 - t1) * 1e6)
        print(f"{name:12s} exact={exact!s:5s} validate {statistics.median(vs):7.1f} us  launch {statistics.median(ts):7.1f} us", flush=True)
    rt.exact_graphs = True
    pr = cProfile.Profile()
    for _ in range(30):
        torch.cuda.synchronize(); pr.enable(); b = rt.launch(reqs); pr.disable(); b.result()
    s = io.StringIO(); pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(14); print("\n".join(s.getvalue().splitlines()[6:24]))
