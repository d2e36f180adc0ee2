"""Where a long video's cut run loses time against its uncut run (a record of what ran on the GPU).

    python benchmarks/records/split_gap_probe.py [--out DIR] [--dry-run]

A 1-minute 1280x720 video at 2 fps (60 frame pairs) through the vision runtime with the default
grid, captured, real encoder sizes, random bf16 weights, input on the GPU: cut into pieces
(the default) against uncut (``split_requests=False``, unbounded). First the wall time per frame
pair, the runs in turns (ABBA, four rounds after two warm-ups each). Then one run of each under
``torch.profiler``, and from its trace: the GPU's busy time (kernels, copies, sets; their union)
against the span from first to last, the idle gaps over 50 us with the CUDA runtime calls the host
made during each (a host wait shows as a synchronize; a launch-bound stretch as launches), the
runtime calls' totals, and the kernels' totals by name, cut against uncut. That tells whether the
cut run's extra time is idle device time (a wait, host work between pieces) or slower kernels.

With ``--overlap``, then the lane's eager runs called directly on pieces of whole frames, in turns
(ABBA, three rounds): uncut; pieces of 13 frame pairs one after another (what the runtime's bound
allows); pieces of 7 (about half: two in flight hold what one 13-piece holds) and of 13, alternating
between two CUDA streams so that one piece's last wave of each kernel overlaps the other's; and
pieces of 4, 8, 20 and 30 one after another (time per frame pair against piece size).

One JSON line per result into DIR/split_gap.jsonl; the traces as DIR/trace_{cut,uncut}.json.gz.
``--dry-run``: tiny encoders on the CPU, a check of the script (no GPU figures).
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from long_media_probe import emit  # noqa: E402  one JSON line, printed and appended

GPU_CATS = ("kernel", "gpu_memcpy", "gpu_memset")


def gpu_analysis(trace: dict, top: int = 12) -> dict:
    """Busy, idle, gaps and totals from a chrome trace of torch.profiler (times in ms)."""
    ev = [e for e in trace.get("traceEvents", []) if e.get("ph") == "X" and "dur" in e]
    gpu = sorted((e for e in ev if e.get("cat") in GPU_CATS), key=lambda e: e["ts"])
    api = sorted((e for e in ev if e.get("cat") == "cuda_runtime" or e.get("cat") == "cuda_driver"),
                 key=lambda e: e["ts"])
    if not gpu:
        return {"gpu_events": 0}
    busy, gaps, end = 0.0, [], gpu[0]["ts"]
    cur_s, cur_e = gpu[0]["ts"], gpu[0]["ts"] + gpu[0]["dur"]
    for e in gpu[1:]:
        s, t = e["ts"], e["ts"] + e["dur"]
        if s > cur_e:
            busy += cur_e - cur_s
            gaps.append((cur_e, s))
            cur_s, cur_e = s, t
        else:
            cur_e = max(cur_e, t)
    busy += cur_e - cur_s
    end = cur_e
    span = end - gpu[0]["ts"]
    big = [(a, b) for a, b in gaps if b - a > 50]

    def during(a, b):
        names: dict[str, float] = {}
        for e in api:
            if e["ts"] + e["dur"] < a or e["ts"] > b:
                continue
            ov = min(b, e["ts"] + e["dur"]) - max(a, e["ts"])
            names[e["name"]] = names.get(e["name"], 0.0) + ov
        return {k: round(v / 1e3, 3) for k, v in sorted(names.items(), key=lambda kv: -kv[1])[:4]}

    kernels: dict[str, list] = {}
    for e in gpu:
        k = kernels.setdefault(e["name"][:90], [0, 0.0])
        k[0] += 1
        k[1] += e["dur"]
    calls: dict[str, list] = {}
    for e in api:
        c = calls.setdefault(e["name"], [0, 0.0])
        c[0] += 1
        c[1] += e["dur"]
    return {
        "span_ms": round(span / 1e3, 3), "busy_ms": round(busy / 1e3, 3), "idle_ms": round((span - busy) / 1e3, 3),
        "gaps_over_50us": len(big), "gaps_over_50us_ms": round(sum(b - a for a, b in big) / 1e3, 3),
        "largest_gaps": [{"at_ms": round((a - gpu[0]["ts"]) / 1e3, 3), "ms": round((b - a) / 1e3, 3), "host": during(a, b)}
                         for a, b in sorted(big, key=lambda g: g[0] - g[1])[:top]],
        "kernels": {k: [n, round(d / 1e3, 3)] for k, (n, d) in sorted(kernels.items(), key=lambda kv: -kv[1][1])[:top]},
        "kernel_launches": sum(n for n, _ in kernels.values()),
        "gpu_ms_total": round(sum(d for _, d in kernels.values()) / 1e3, 3),
        "runtime_calls": {k: [n, round(d / 1e3, 3)] for k, (n, d) in sorted(calls.items(), key=lambda kv: -kv[1][1])[:top]},
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=None)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--overlap", action="store_true")
    a = p.parse_args()
    outdir = Path(a.out) if a.out else None
    if outdir:
        outdir.mkdir(parents=True, exist_ok=True)
    out = outdir and str(outdir / "split_gap.jsonl")
    from omnienc.runtime import BucketGrid, EncoderRuntime, RuntimeConfig, VisionRequest

    if a.dry_run:
        sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
        from conftest import hf_and_native_vision

        device, vis, t, h, w = torch.device("cpu"), hf_and_native_vision()[1], 6, 4, 8
        grid = BucketGrid.from_dict({"vision": {"buckets": [{"patches": 64, "batch": 2}]}})
    else:
        from long_video_probe import CUDA, real_vision

        device, vis, t, h, w = CUDA, real_vision(), 60, 46, 80
        grid = BucketGrid.default()
    cuda = device.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    dtype = next(vis.parameters()).dtype
    cut = EncoderRuntime(vision=vis, grid=grid)
    whole = EncoderRuntime(vision=vis, grid=grid, config=RuntimeConfig(split_requests=False, max_transient_bytes=2**40))
    for rt in (cut, whole):
        rt.capture(progress=False)
    req = VisionRequest(torch.randn(t * h * w, vis.in_features, device=device, dtype=dtype), torch.tensor([[t, h, w]]))
    runs = {"cut": cut, "uncut": whole}
    emit(out, case="setup", card=torch.cuda.get_device_name() if cuda else "cpu (dry run)", frame_pairs=t,
         piece_limit=str(cut.vision.piece_limit),
         pieces=len(cut.vision.spec.pieces([(t, h, w)], cut.vision.piece_limit)))

    def once(label):
        sync()
        t0 = time.perf_counter()
        runs[label].encode([req])
        sync()
        return time.perf_counter() - t0

    for label in runs:
        once(label), once(label)
    times = {k: [] for k in runs}
    for r in range(a.rounds):
        for label in (("cut", "uncut", "uncut", "cut") if r % 2 == 0 else ("uncut", "cut", "cut", "uncut")):
            times[label].append(once(label))
    emit(out, case="turns", **{f"{k}_ms_per_frame_pair": [round(1e3 * x / t, 3) for x in v] for k, v in times.items()},
         **{f"{k}_median": round(1e3 * statistics.median(v) / t, 3) for k, v in times.items()})

    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    for label in runs:
        with profile(activities=acts) as prof:
            once(label)
        path = (outdir or Path("/tmp")) / f"trace_{label}.json"
        prof.export_chrome_trace(str(path))
        trace = json.loads(path.read_text())
        with gzip.open(f"{path}.gz", "wt") as f:
            json.dump(trace, f)
        path.unlink()
        emit(out, case="profile", runtime=label, **gpu_analysis(trace))
    if a.overlap:
        overlap(out, cut, whole, req, t, h, w, cuda, sync)


def overlap(out, cut, whole, req, t, h, w, cuda, sync):
    """Pieces run by the lane's eager runner directly, on one stream or alternating two."""
    streams = [torch.cuda.Stream(), torch.cuda.Stream()] if cuda else [None, None]
    main = torch.cuda.current_stream() if cuda else None
    frame = h * w
    pv = req.pixel_values

    def pieces(k):
        return [(pv[i * frame : min(t, i + k) * frame], [(min(t, i + k) - i, h, w)]) for i in range(0, t, k)]

    def run(variant):
        k, two = variant
        if k == 0:
            whole.vision.eager.run([req], [[(t, h, w)]])
            return
        outs = []
        for j, (x, shape) in enumerate(pieces(k)):
            s = streams[j % 2] if two else None
            if s is None:
                outs.append(cut.vision.eager.run([type(req)(x, torch.tensor(shape))], [shape]))
                continue
            s.wait_stream(main)
            with torch.cuda.stream(s):
                outs.append(cut.vision.eager.run([type(req)(x, torch.tensor(shape))], [shape]))
        if two and cuda:
            for s in streams:
                main.wait_stream(s)
        return outs

    variants = {"uncut": (0, False), "seq13": (13, False), "two_streams_7": (7, True), "two_streams_13": (13, True),
                "seq4": (4, False), "seq8": (8, False), "seq20": (20, False), "seq30": (30, False)}

    def once(v):
        sync()
        t0 = time.perf_counter()
        with torch.inference_mode():
            run(variants[v])
        sync()
        return time.perf_counter() - t0

    for v in variants:
        once(v)
    main_ab = ("uncut", "seq13", "two_streams_7", "two_streams_13")
    times = {v: [] for v in variants}
    for r in range(3):
        order = main_ab if r % 2 == 0 else main_ab[::-1]
        for v in order:
            times[v].append(once(v))
    for v in ("seq4", "seq8", "seq20", "seq30"):
        times[v] += [once(v), once(v)]
    emit(out, case="overlap", frame_pairs=t, **{f"{k}_median": round(1e3 * statistics.median(v) / t, 3) for k, v in times.items()},
         **{f"{k}_ms_per_frame_pair": [round(1e3 * x / t, 3) for x in v] for k, v in times.items()})


if __name__ == "__main__":
    main()
