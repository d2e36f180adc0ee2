"""Throughput of the 2,000-request chat mix, exact graphs on vs off, alternated, one process."""
import torch
from omnienc.tools.models import build_encoders
from omnienc.runtime import EncoderRuntime
from omnienc.tools.service_bench import throughput_run, trace_records, trace_requests, load_cost
dev = torch.device("cuda")
vis, aud = build_encoders(None, dev, "bfloat16", "real")
rt = EncoderRuntime(vis, aud); rt.capture(progress=False)
cost, _ = load_cost(None)
reqs = trace_requests(trace_records(2000), vis, aud, True, 0)
for rnd in range(2):
    for exact in (True, False):
        rt.exact_graphs = exact
        r = throughput_run([rt], reqs, max_wait_ms=2.0, max_batch=64, cost=cost)
        s = rt.stats()
        ex = {m: {k: s[m][k] for k in ("exact_captures", "exact_failures", "exact_evictions", "exact_graphs")} for m in ("vision", "audio")}
        print(f"round {rnd} exact={exact!s:5s} {r['requests_per_s']:.1f} req/s, {r['batches']} batches, "
              f"replays {s['replays']} eager {s['eager_runs']} exact {s['exact_replays']} fallbacks {s['fallbacks']}; {ex}", flush=True)
