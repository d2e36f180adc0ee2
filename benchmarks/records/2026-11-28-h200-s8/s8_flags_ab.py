"""Session 8: the row-flags kernel vs the isfinite/all chain, end to end: two runtimes in one process
(each captures with its own flags op), rt.encode alternated per round, median ms per workload."""
import statistics, sys, time, torch
import omnienc.runtime.lane as lane_mod
from omnienc.encoders.ops.finite import row_flags_torch, row_flags as row_flags_kernel
from omnienc.tools.models import build_encoders
from omnienc.tools.workloads import all_workloads, make_inputs
from omnienc.runtime import EncoderRuntime
from omnienc.tools.floor import measure

dev = torch.device("cuda")
vis, aud = build_encoders(None, dev, "bfloat16", "real")
impls = {"torch": row_flags_torch, "kernel": row_flags_kernel}
rts = {}
for name, fn in impls.items():
    lane_mod.finite_row_flags = fn
    rts[name] = EncoderRuntime(vis, aud)
    rts[name].capture(progress=False)
W = all_workloads()
names = sys.argv[1].split(",") if len(sys.argv) > 1 else ["image448", "audio10s", "audios8x10s", "images8x448"]
res = {n: {k: [] for k in impls} for n in names}
for n in names:
    reqs = make_inputs(W[n], vis.config, aud.config, dev, torch.bfloat16).requests
    for rnd in range(3):
        for name, fn in impls.items():
            lane_mod.finite_row_flags = fn
            res[n][name].append(measure(lambda: rts[name].encode(reqs), dev, 30, 5, 2.0).median_ms)
    print(f"{n:12s} " + "  ".join(f"{k} {statistics.median(v):.3f} ms {[round(x, 3) for x in v]}" for k, v in res[n].items()), flush=True)
