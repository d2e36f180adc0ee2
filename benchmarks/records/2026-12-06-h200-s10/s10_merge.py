"""Session 10: mixed32, one process: native encoders vs the runtime under each rule of rules.py,
alternating rounds of 8 timed calls each (every variant in steady state from its 8th call)."""
import sys, torch
sys.path.insert(0, "scratch")
import rules
from omnienc.tools.models import build_encoders
from omnienc.tools.workloads import all_workloads, make_inputs
from omnienc.tools.floor import measure
from omnienc.runtime import EncoderRuntime
dev = torch.device("cuda")
vis, aud = build_encoders(None, dev, "bfloat16", "real")
rt = EncoderRuntime(vis, aud); rt.capture(progress=False); rt.exact_graphs = False
x = make_inputs(all_workloads()["mixed32"], vis.config, aud.config, dev, torch.bfloat16)
@torch.inference_mode()
def main():
    fns = {"native": lambda: (vis(x.vision[0], x.vision[1]), aud(x.audio[0], x.audio[1]))}
    for r in rules.RULES:
        fns[r] = (lambda r=r: (rules.apply(r, rt.lanes()), rt.encode(x.requests)))
    res = {k: [] for k in fns}
    for rnd in range(4):
        for name, f in fns.items():
            res[name].append(measure(f, dev, 8, 1, 2.0).median_ms)
        print(f"round {rnd}: " + "  ".join(f"{k} {v[-1]:.1f}" for k, v in res.items()), flush=True)
    med = {k: sorted(v[1:])[1] for k, v in res.items()}
    print("medians of rounds 1-3: " + " ".join(f"{k}={v:.1f} ({v / med['native']:.3f}x)" for k, v in med.items()), flush=True)
    s = rt.stats()
    print("vision merges", s["vision"]["eager_merges"], "eager attention", s["vision"]["eager_attention"],
          "dense shapes", s["vision"]["dense_shapes"], flush=True)
main()
