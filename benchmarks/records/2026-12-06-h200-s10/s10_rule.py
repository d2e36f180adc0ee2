"""Session 10: argv[1] = a rule of rules.py, argv[2] = bench | tput; the rest goes to `omnienc bench`
(bench); tput: the 2,000-request mix on one GPU, as session 9's s9_tput."""
import sys
sys.path.insert(0, "scratch")
import rules
rule, what, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
rules.apply(rule)
if what == "bench":
    from omnienc.tools.cli import main
    sys.exit(main(["bench", *rest]))
import torch
from omnienc.tools.models import build_encoders
from omnienc.runtime import EncoderRuntime
from omnienc.tools.service_bench import throughput_run, trace_records, trace_requests, load_cost
dev = torch.device("cuda")
vis, aud = build_encoders(None, dev, "bfloat16", "real")
rt = EncoderRuntime(vis, aud); rt.capture(progress=False)
cost, _ = load_cost(None)
reqs = trace_requests(trace_records(2000), vis, aud, True, 0)
r = throughput_run([rt], reqs, max_wait_ms=2.0, max_batch=64, cost=cost)
s = rt.stats()
print(f"rule={rule} {r['requests_per_s']:.1f} req/s  vision merges {s['vision']['eager_merges']} eager runs "
      f"{s['vision']['eager_runs']} eager attention {s['vision']['eager_attention']} audio merges {s['audio']['eager_merges']}", flush=True)
