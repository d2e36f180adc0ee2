"""What stays allocated after a launch's results are dropped, and a long video's transient peak
measured from a clean base (a record of a GPU call).

    python benchmarks/records/held_memory_probe.py [--out DIR] [--dry-run]

Call 12 read, after a launch whose results the caller had dropped, memory still allocated (5.8 GiB
after an uncut 1-minute video) until a later launch, so a peak measured from the allocation before
a launch depends on when that memory goes. Here, after each launch (results dropped, device
synchronized), what is still allocated above the clean base: at once, after a garbage collection,
after one more allocation (the allocator frees blocks whose streams' events have completed when it
allocates) and after ``empty_cache``. Then the 10-minute 720p video's peak from a clean base
(collected, cache emptied): its transient against the runtime's bound. One JSON line per result.
``--dry-run`` runs the steps on the CPU with tiny encoders and inputs a hundredth of the size.
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import long_media_probe as lm  # noqa: E402


def clean_base() -> int:
    gc.collect()
    lm.sync()
    if lm.DEVICE.type == "cuda":
        torch.cuda.empty_cache()
    return lm.allocated()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=None)
    p.add_argument("--dry-run", action="store_true")
    a = p.parse_args()
    if a.out:
        Path(a.out).mkdir(parents=True, exist_ok=True)
    out = a.out and str(Path(a.out) / "held_memory.jsonl")
    from omnienc.runtime import BucketGrid, EncoderRuntime, RuntimeConfig

    if a.dry_run:
        lm.DEVICE, lm.SCALE = torch.device("cpu"), 0.01
        vis, aud = lm.tiny_encoders()
    else:
        vis, aud = lm.real_vision(), lm.real_audio()
    cut = EncoderRuntime(vision=vis, audio=aud, grid=BucketGrid.default())
    cut.capture(progress=False)
    whole = EncoderRuntime(vision=vis, audio=aud, grid=BucketGrid.default(),
                           config=RuntimeConfig(split_requests=False, max_transient_bytes=2**40))
    whole.capture(progress=False)
    gib = lambda b: round(b / 2**30, 3)  # noqa: E731
    dtype = next(vis.parameters()).dtype

    def video(minutes):
        from omnienc.runtime import VisionRequest

        t = max(1, int(lm.SCALE * minutes * 60))
        return VisionRequest(torch.randn(t * 46 * 80, vis.in_features, device=lm.DEVICE, dtype=dtype),
                             torch.tensor([[t, 46, 80]]))

    def held(label, rt, req):
        base = clean_base()
        rt.encode([req])  # results dropped at once
        lm.sync()
        steps = {"at_once": lm.allocated() - base}
        gc.collect()
        steps["after_gc"] = lm.allocated() - base
        keep = torch.empty(1, device=lm.DEVICE)
        steps["after_an_allocation"] = lm.allocated() - base - keep.element_size()
        del keep
        lm.sync()
        if lm.DEVICE.type == "cuda":
            torch.cuda.empty_cache()
        steps["after_empty_cache"] = lm.allocated() - base
        lm.emit(out, case="held", launch=label, **{f"{k}_gib": gib(v) for k, v in steps.items()})

    v1, v10 = video(1), video(10)
    held("uncut video1m, first", whole, v1)
    held("uncut video1m, second", whole, v1)
    held("cut video1m, first", cut, v1)
    held("cut video1m, second", cut, v1)
    held("cut video10m, first", cut, v10)
    held("cut video10m, second", cut, v10)
    mem = cut.memory()
    for run in range(2):
        base = clean_base()
        if lm.DEVICE.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        res = cut.encode([v10])[0]
        lm.sync()
        peak = lm.peak_allocated() - base
        outputs = sum(t.numel() * t.element_size() for t in [res.embeds, *res.deepstack])
        del res
        lm.emit(out, case="video10m_clean_base", run=run, peak_gib=gib(peak), outputs_gib=gib(outputs),
                transient_gib=gib(peak - outputs), bound_gib=gib(mem["max_transient_bytes"]),
                within_bound=peak - outputs <= mem["max_transient_bytes"])


if __name__ == "__main__":
    main()
