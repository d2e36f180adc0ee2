"""Session 8: throughput of the 2,000-request mix (all at once, one GPU): uncaptured runs with dense
cuDNN attention admitted ("auto", today) vs FlashAttention varlen only; auto first (cold cuDNN plans),
then varlen, then auto again (plans built)."""
import time, torch
from omnienc.tools.models import build_encoders
from omnienc.runtime import EncoderRuntime
from omnienc.tools.service_bench import throughput_run, trace_records, trace_requests, load_cost
dev = torch.device("cuda")
vis, aud = build_encoders(None, dev, "bfloat16", "real")
rt = EncoderRuntime(vis, aud); rt.capture(progress=False)
cost, _ = load_cost(None)
reqs = trace_requests(trace_records(2000), vis, aud, True, 0)
for setting in ("auto", "varlen", "auto"):
    for lane in rt.lanes():
        lane.eager_attention = setting
    r = throughput_run([rt], reqs, max_wait_ms=2.0, max_batch=64, cost=cost)
    s = rt.stats()
    v = s["vision"]
    print(f"eager_attention={setting:6s} {r['requests_per_s']:.1f} req/s wall {r['runs'][0]['wall_s'] if 'runs' in r else r.get('wall_s')} "
          f"eager runs by backend {v.get('eager_attention')} dense shapes {v.get('dense_shapes')}", flush=True)
