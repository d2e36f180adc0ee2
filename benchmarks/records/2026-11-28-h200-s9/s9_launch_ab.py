"""Session 9 GPU A/B: host time of a one-request launch and wall time of encode, f30bc20
(omnienc_old) vs the working tree, same encoders, exact-layout replays, 5 alternating rounds."""
import sys, os, time, statistics, torch
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "s9base"))
import omnienc_old.runtime as old
import omnienc.runtime as new
from omnienc.tools.models import build_encoders
from omnienc.tools.workloads import all_workloads, make_inputs
vis, aud = build_encoders(None, "cuda:0", "bfloat16", "real")
rts = {"old": old.EncoderRuntime(vision=vis, audio=aud, device="cuda:0"), "new": new.EncoderRuntime(vision=vis, audio=aud, device="cuda:0")}
for rt in rts.values():
    rt.capture(progress=False)
W = all_workloads()
def as_mod(mod, reqs):
    return [mod.VisionRequest(r.pixel_values, r.grid_thw) if hasattr(r, "pixel_values") else mod.AudioRequest(r.input_features, r.feature_lens) for r in reqs]
def host(rt, r, n=200):
    ts = []
    for _ in range(n):
        torch.cuda.synchronize(); t0 = time.perf_counter(); b = rt.launch(r); ts.append((time.perf_counter() - t0) * 1e6); b.result()
    return statistics.median(ts)
def wall(rt, r, n=100):
    ts = []
    for _ in range(n):
        torch.cuda.synchronize(); t0 = time.perf_counter(); rt.encode(r); ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)
for w in ("audios8x10s", "images8x448", "audio10s"):
    base = make_inputs(W[w], vis.config, aud.config, torch.device("cuda"), torch.bfloat16).requests
    R = {"old": as_mod(old, base), "new": as_mod(new, base)}
    for k in rts:
        for _ in range(4):
            rts[k].encode(R[k])
    res = {k: ([], []) for k in rts}
    for _ in range(5):
        for k in ("old", "new"):
            res[k][0].append(host(rts[k], R[k])); res[k][1].append(wall(rts[k], R[k]))
    for k, (h, wl) in res.items():
        print(f"{w:12s} {k}: launch host {statistics.median(h):6.1f} us (rounds {', '.join(f'{x:.0f}' for x in h)}); "
              f"encode wall {statistics.median(wl):.3f} ms (rounds {', '.join(f'{x:.3f}' for x in wl)})", flush=True)
