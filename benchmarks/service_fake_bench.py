"""``python benchmarks/service_fake_bench.py``: the service's closed loop on a fake GPU, on the CPU.

``omnienc.tools.service_load``'s closed-loop measurement (8 client threads, each submitting one request,
waiting for its result and submitting the next; against one ``encode`` of the 8 together) run over a
``FakeRuntime``: real validation and packing (the tiny encoders' runtime), a ``launch`` that spends
``--host-ms`` of host time and returns a batch that a fake GPU finishes after ``fixed + per_request
* n`` ms, one batch after another (a device runs its batches serially, in launch order). The
default costs fit that line through H200 measurements of the graphed runtime (one image448 ~2.7 ms,
8 of them together ~14.4 ms; one audio10s ~1.9 ms, 8 together ~4.6 ms), so the ratio here shows what
the service's batching and thread hand-offs cost against the GPU time, without a GPU. The shorter the
GPU time of a batch of 8 (audio10s), the larger the share of those hand-offs.
"""

from __future__ import annotations

import argparse
import time

import torch

from omnienc.runtime import AudioRequest, EncoderRuntime, EncoderService, VisionRequest
from omnienc.tools.models import tiny_configs

# (fixed ms per batch, ms per request) of a fake GPU, and the request shape, per workload.
WORKLOADS = {"image448": ((1.03, 1.67), "vision", [(1, 28, 28)]), "audio10s": ((1.51, 0.386), "audio", [1000])}


class FakeBatch:
    """A launched batch: done when the fake GPU reaches ``ready_at`` (monotonic seconds)."""

    def __init__(self, outputs: list, ready_at: float):
        self.outputs, self.ready_at = outputs, ready_at

    def done(self) -> bool:
        return time.monotonic() >= self.ready_at

    def wait(self) -> None:
        left = self.ready_at - time.monotonic()
        if left > 0:
            time.sleep(left)

    def results(self) -> list:
        self.wait()
        return self.outputs

    def result(self) -> list:
        return self.results()


class FakeRuntime:
    """``EncoderRuntime``'s interface over a fake GPU (see the module docstring)."""

    def __init__(self, real: EncoderRuntime, fixed_ms: float, per_request_ms: float, host_ms: float):
        self.real, self.device, self.grid = real, torch.device("cpu"), real.grid
        self.fixed_ms, self.per_request_ms, self.host_ms = fixed_ms, per_request_ms, host_ms
        self._free_at = 0.0
        self.batches = 0

    def lanes(self):
        return self.real.lanes()

    def route(self, requests):
        return self.real.route(requests)

    def validate(self, requests):
        return self.real.validate(requests)

    def launch(self, requests, shapes=None) -> FakeBatch:
        t0 = time.monotonic()
        if shapes is None:
            self.validate(requests)
        while time.monotonic() - t0 < self.host_ms / 1e3:  # host work holds the thread (and the GIL)
            pass
        start = max(time.monotonic(), self._free_at)
        self._free_at = start + (self.fixed_ms + self.per_request_ms * len(requests)) / 1e3
        self.batches += 1
        return FakeBatch([object() for _ in requests], self._free_at)

    def encode(self, requests) -> list:
        return self.launch(requests).result()


def tiny_runtime() -> EncoderRuntime:
    from omnienc.encoders.audio import AudioEncoder
    from omnienc.encoders.vision import VisionEncoder

    vcfg, acfg = tiny_configs()
    return EncoderRuntime(vision=VisionEncoder(vcfg).eval(), audio=AudioEncoder(acfg).eval(), use_cuda_graphs=False)


def requests_for(rt: EncoderRuntime, name: str, n: int) -> list:
    _, modality, shape = WORKLOADS[name]
    if modality == "vision":
        rows = sum(t * h * w for t, h, w in shape)
        return [VisionRequest(torch.randn(rows, rt.vision.encoder.in_features), torch.tensor(shape)) for _ in range(n)]
    mel = rt.audio.encoder.config.num_mel_bins
    return [AudioRequest(torch.randn(mel, sum(shape)), torch.tensor(shape)) for _ in range(n)]


def run(name: str, seconds: float, host_ms: float, clients: int = 8, **service) -> dict:
    from omnienc.runtime.service import default_cost
    from omnienc.tools.service_load import closed_loop

    (fixed, per), _, _ = WORKLOADS[name]
    real = tiny_runtime()
    fake = FakeRuntime(real, fixed, per, host_ms)
    reqs = requests_for(real, name, clients)
    return closed_loop(fake, reqs, seconds, cost=default_cost, **service)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workloads", default="image448,audio10s")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--host-ms", type=float, default=0.2, help="host time of one launch (default 0.2)")
    p.add_argument("--max-wait-ms", type=float, default=2.0)
    p.add_argument("--max-batch", type=int, default=64)
    p.add_argument("--quiet-ms", type=float, default=-1, help="the service's quiet_ms (default: off)")
    p.add_argument("--close-on-return", choices=("on", "off", "both"), default="both",
                   help="the service's close_on_return; both: off and on, alternating, --rounds times")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--rounds", type=int, default=1, help="runs per setting (with both: alternating)")
    args = p.parse_args(argv)
    settings = {"on": [True], "off": [False], "both": [False, True]}[args.close_on_return]
    for name in args.workloads.split(","):
        for k in range(args.rounds):
            for close in settings if k % 2 == 0 else settings[::-1]:
                r = run(name, args.seconds, args.host_ms, clients=args.clients, max_wait_ms=args.max_wait_ms,
                        max_batch=args.max_batch, quiet_ms=None if args.quiet_ms < 0 else args.quiet_ms,
                        close_on_return=close)
                print(f"{name} close_on_return={'on' if close else 'off'}: closed loop "
                      f"{r['requests_per_s']:.0f} req/s, {r['requests_per_batch'] or 0:.2f} per batch; "
                      f"one encode of {r['clients']}: {r['encode_all_ms']['median_ms']:.2f} ms = "
                      f"{r['encode_all_requests_per_s']:.0f} req/s; ratio {r['ratio']:.3f}")


if __name__ == "__main__":
    main()
