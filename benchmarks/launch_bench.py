"""``python benchmarks/launch_bench.py``: host time of one ``EncoderRuntime.launch``, on the CPU.

The host time of a one-request ``encode`` (``launch`` on an idle GPU: validation, packing,
staging, enqueue) measured without a GPU: a runtime over the tiny encoders on the CPU and
the packaged grid, whose graph buckets are "captured" as stubs (the bucket's forward runs once to
make its output tensors; a replay then does nothing). So a launch runs exactly the replay path's
host code (validation, packing, plan cache, plan upload, input fill, output split, statistics) and
no forward. CUDA-only work (events, pinned flag copies) is not in it; the CPU-only scan of the
inputs for NaN/inf (``validate``'s ``finite``; on CUDA the outputs are checked on the device instead)
is left out too unless ``--host-finite``, so the figure is the CUDA path's host work.

Prints, per workload, the median microseconds of ``launch`` over ``--repeats`` (after a warm-up),
and with ``--profile`` the top functions of a cProfile run.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time

import torch

from omnienc.runtime import AudioRequest, EncoderRuntime, VisionRequest
from omnienc.runtime.buckets import forward
from omnienc.tools.models import tiny_configs

WORKLOADS = {"image448": ("vision", [(1, 28, 28)]), "audio10s": ("audio", [1000]),
             "images8x448": ("vision", [(1, 28, 28)] * 8)}


class StubGraph:
    """A captured graph whose replay does nothing (its outputs were made once by the real forward)."""

    def replay(self) -> None:
        pass


def build_runtime() -> EncoderRuntime:
    from omnienc.encoders.audio import AudioEncoder
    from omnienc.encoders.vision import VisionEncoder

    vcfg, acfg = tiny_configs()
    for cfg in (vcfg, acfg):
        cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    vis, aud = VisionEncoder(vcfg).eval(), AudioEncoder(acfg).eval()
    return EncoderRuntime(vision=vis, audio=aud, use_cuda_graphs=False)


def make_requests(rt: EncoderRuntime, name: str) -> list:
    modality, shape = WORKLOADS[name]
    if modality == "vision":
        if name.startswith("images"):
            return [VisionRequest(torch.randn(784, rt.vision.encoder.in_features), torch.tensor([list(s)]))
                    for s in shape]
        rows = sum(t * h * w for t, h, w in shape)
        return [VisionRequest(torch.randn(rows, rt.vision.encoder.in_features), torch.tensor(shape))]
    mel = rt.audio.encoder.config.num_mel_bins
    return [AudioRequest(torch.randn(mel, sum(shape)), torch.tensor(shape))]


def stub_capture(rt: EncoderRuntime, requests: list) -> None:
    """Makes the buckets ``requests`` land in replay stubs (their outputs from one real forward)."""
    shapes = rt.validate(requests)
    for lane, idx in rt.route(requests):
        for p, graph in lane.pack([shapes[i] for i in idx]):
            br = lane.buckets.get(p.bucket)
            if br is None or not graph or br.graph is not None:
                continue
            br.attention = lane.attention.captured()
            lane.buckets.stage(br, [])
            with torch.inference_mode():
                br.outputs = forward(lane.spec, br.inputs, br.plan, br.attention)
            br.graph = StubGraph()


def time_launch(rt: EncoderRuntime, requests: list, repeats: int, warmup: int = 200) -> float:
    """Median microseconds of ``rt.launch(requests)`` (results read between calls, outside the timing)."""
    times = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter_ns()
        batch = rt.launch(requests)
        t1 = time.perf_counter_ns()
        batch.results()
        if i >= warmup:
            times.append((t1 - t0) / 1e3)
    return statistics.median(times)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workloads", default="image448,audio10s", help=f"comma-separated, of {', '.join(WORKLOADS)}")
    p.add_argument("--repeats", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=3, help="report the best median of this many rounds")
    p.add_argument("--profile", action="store_true", help="also print a cProfile of each workload")
    p.add_argument("--host-finite", action="store_true",
                   help="keep the CPU path's scan of the inputs for NaN/inf (CUDA does not do it)")
    args = p.parse_args(argv)
    if not args.host_finite:
        from omnienc.runtime import requests as requests_module

        requests_module.check_finite = lambda *a: None
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args) -> None:
    rt = build_runtime()
    for name in args.workloads.split(","):
        reqs = make_requests(rt, name)
        stub_capture(rt, reqs)
        us = min(time_launch(rt, reqs, args.repeats) for _ in range(args.rounds))
        print(f"{name}: launch {us:.1f} us (median of {args.repeats}, best of {args.rounds} rounds)")
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(args.repeats):
                rt.launch(reqs).results()
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
