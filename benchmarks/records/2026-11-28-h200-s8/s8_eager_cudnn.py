"""Session 8: uncaptured runs' attention on the 2,000-request throughput mix and on mixed32, one runtime,
settings alternated: auto with long runs on the cuDNN frontend (new), auto without (old rule), varlen only."""
import math, statistics, torch
from omnienc.tools.models import build_encoders
from omnienc.runtime import EncoderRuntime
from omnienc.runtime.lane import Lane
from omnienc.tools.service_bench import throughput_run, trace_records, trace_requests, load_cost
from omnienc.tools.workloads import all_workloads, make_inputs
from omnienc.tools.floor import measure
dev = torch.device("cuda")
vis, aud = build_encoders(None, dev, "bfloat16", "real")
rt = EncoderRuntime(vis, aud); rt.capture(progress=False)
cost, _ = load_cost(None)
reqs = trace_requests(trace_records(2000), vis, aud, True, 0)
mixed = make_inputs(all_workloads()["mixed32"], vis.config, aud.config, dev, torch.bfloat16).requests
SETTINGS = {"new": ("auto", 8192), "old": ("auto", math.inf), "varlen": ("varlen", 8192)}
def use(name):
    ea, thr = SETTINGS[name]
    for lane in rt.lanes():
        lane.eager_attention = ea
        lane.EAGER_CUDNN_TOKENS = thr
rt.exact_graphs = False
mx = {k: [] for k in SETTINGS}
for rnd in range(2):
    for name in SETTINGS:
        use(name)
        mx[name].append(measure(lambda: rt.encode(mixed), dev, 10, 2, 4.0).median_ms)
print("mixed32 ms " + "  ".join(f"{k} {statistics.median(v):.1f} {[round(x, 1) for x in v]}" for k, v in mx.items()), flush=True)
rt.exact_graphs = True
for name in ("new", "old", "varlen", "new"):
    use(name)
    r = throughput_run([rt], reqs, max_wait_ms=2.0, max_batch=64, cost=cost)
    v = rt.stats()["vision"]
    print(f"throughput {name:6s} {r['requests_per_s']:.1f} req/s; uncaptured vision runs by backend {v.get('eager_attention')}", flush=True)
