"""Session 9: throughput of the 2,000-request mix on one GPU under one dense-admission rule (argv[1]),
each rule in its own process (cuDNN's plan cache is per process). Rules: auto (today), varlen,
after8 (DENSE_AFTER=8), runs4 (dense_layout max_runs=4), credit (if the code has it)."""
import sys, functools, torch
from omnienc.tools.models import build_encoders
from omnienc.runtime import EncoderRuntime, lane as lane_mod
from omnienc.encoders import attention as attn
from omnienc.tools.service_bench import throughput_run, trace_records, trace_requests, load_cost
rule = sys.argv[1]
if rule.startswith("after"):
    lane_mod.Lane.DENSE_AFTER = int(rule[5:])
elif rule.startswith("runs"):
    lane_mod.dense_layout = functools.partial(attn.dense_layout, max_runs=int(rule[4:]))
    lane_mod.Lane.DENSE_CREDIT = 10**9  # the old rule otherwise: no credit
dev = torch.device("cuda")
vis, aud = build_encoders(None, dev, "bfloat16", "real")
rt = EncoderRuntime(vis, aud, eager_attention="varlen" if rule == "varlen" else "auto"); rt.capture(progress=False)
cost, _ = load_cost(None)
reqs = trace_requests(trace_records(2000), vis, aud, True, 0)
import time, statistics
from omnienc.tools.workloads import all_workloads, make_inputs
for i in range(1):
    r = throughput_run([rt], reqs, max_wait_ms=2.0, max_batch=64, cost=cost)
    v = rt.stats()["vision"]
    print(f"rule={rule:7s} pass {i} {r['requests_per_s']:.1f} req/s eager runs by backend {v.get('eager_attention')} "
          f"dense shapes {v.get('dense_shapes')} refused {v.get('dense_refused')}", flush=True)
