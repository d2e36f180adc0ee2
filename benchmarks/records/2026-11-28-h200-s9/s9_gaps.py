"""Session 9: where the GPU idles in the runtime's vision side of mixed32 (FlashAttention only):
gaps between kernels and the host ops running at each gap's start (torch profiler, CPU + CUDA)."""
import torch
from omnienc.tools.models import build_encoders
from omnienc.tools.workloads import all_workloads, make_inputs
from omnienc.runtime import EncoderRuntime, lane as lane_mod
lane_mod.Lane.DENSE_SHAPES = 0
dev = torch.device("cuda")
vis, aud = build_encoders(None, dev, "bfloat16", "real")
rt = EncoderRuntime(vis, aud); rt.capture(progress=False); rt.exact_graphs = False
x = make_inputs(all_workloads()["mixed32"], vis.config, aud.config, dev, torch.bfloat16)
V = [r for r in x.requests if hasattr(r, "pixel_values")]
from torch.profiler import profile as P, ProfilerActivity
with torch.inference_mode():
    for _ in range(3):
        rt.encode(V)
    torch.cuda.synchronize()
    with P(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], with_stack=True) as p:
        rt.encode(V); torch.cuda.synchronize()
ev = p.events()
gpu = sorted([(e.time_range.start, e.time_range.end, e.name) for e in ev if e.device_type.name == "CUDA"])
cpu = [e for e in ev if e.device_type.name == "CPU"]
t0 = gpu[0][0]
print("first kernel at", round((gpu[0][0] - min(e.time_range.start for e in cpu)) / 1e3, 2), "ms after the first host op; GPU span", round((gpu[-1][1] - t0) / 1e3, 2), "ms; busy", round(sum(b - a for a, b, _ in gpu) / 1e3, 2))
end = gpu[0][1]
for a, b, name in gpu[1:]:
    if a - end > 300:
        over = [e for e in cpu if e.time_range.start <= end <= e.time_range.end]
        over.sort(key=lambda e: e.time_range.end - e.time_range.start)
        stack = next((e.stack for e in over if e.stack), [])
        print(f"gap at +{(end - t0) / 1e3:7.2f} ms: {(a - end) / 1e3:6.2f} ms before {name[:40]}; host ops: {[e.name[:50] for e in over[:4]]}; stack {[s[:70] for s in stack[:6]]}")
    end = max(end, b)
