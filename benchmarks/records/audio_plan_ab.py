"""The audio plan of an older commit against this checkout's: the same plans, and the host time of
building one, alternated in one process on one CPU thread.

    python benchmarks/records/audio_plan_ab.py OLD_REF [--rounds 7]

First checks that both build equal plans (every tensor, window and count, or the same error) for
4,000 random batches of clip lengths, paddings and window settings; then times each on four packs
as the runtime stages them (real window settings: 100-frame chunks, 800-frame attention windows).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch
from old_code import load_old

from omnienc.encoders.audio import plan_audio as new

CASES = {"audio10s on 1100x3": ([1000], 11), "4 x 7 s on 3000x4": ([700] * 4, 30),
         "3 x 12 s on 3700x3": ([1200] * 3, 37), "32 x 4 s on 12800x32": ([400] * 32, 128)}


def call(f, lens, nw, nwi, kw):
    try:
        return f(lens, nw, nwi, **kw)
    except ValueError as e:
        return ("error", str(e))


def same_plans(old, rng: random.Random, n: int = 4000) -> int:
    """How many random plans both built (the rest raised the same error); AssertionError on a difference."""
    built = 0
    for _ in range(n):
        lens = [rng.choice([rng.randint(1, 99), rng.randint(1, 3000), 100 * rng.randint(1, 20), rng.randint(100, 250)])
                for _ in range(rng.randint(0, 5))]
        nw, nwi = rng.choice([(50, 400), (50, 100), (50, 800), (4, 32)])
        kw, plain = {}, call(old, lens, nw, nwi, {})
        if not isinstance(plain, tuple) and rng.random() < 0.7:
            chunks = max(0, plain.num_chunks + rng.randint(-1, 3))
            kw["num_chunks"] = chunks
            if rng.random() < 0.5:
                lo = max(plain.num_real - 2, 0)
                kw["num_tokens"] = rng.randint(lo, max(lo, chunks * 13 + 2))
            if rng.random() < 0.5:
                kw["num_segments"] = len(plain.seqlens) + rng.randint(-1, 30)
        a, b = call(old, lens, nw, nwi, kw), call(new, lens, nw, nwi, kw)
        if isinstance(a, tuple) or isinstance(b, tuple):
            assert a == b, (lens, kw, a, b)
            continue
        for name in a.TENSORS:
            x, y = getattr(a, name), getattr(b, name)
            assert x.dtype == y.dtype and torch.equal(x, y), (name, lens, kw)
        assert (a.seqlens, a.max_seqlen, a.num_real) == (b.seqlens, b.max_seqlen, b.num_real), (lens, kw)
        built += 1
    return built


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("old_ref")
    p.add_argument("--rounds", type=int, default=7)
    a = p.parse_args()
    old = load_old(a.old_ref, "encoders/audio.py", "omnienc.encoders.audio_old").plan_audio
    print(f"equal plans: {same_plans(old, random.Random(0))} built by both, the rest the same error")
    torch.set_num_threads(1)
    for name, (lens, chunks) in CASES.items():
        us = {"old": [], "new": []}
        for _ in range(a.rounds):
            for label, f in (("old", old), ("new", new)):
                t0 = time.perf_counter()
                for _ in range(200):
                    f(lens, 50, 800, num_chunks=chunks, num_segments=64)
                us[label].append((time.perf_counter() - t0) / 200 * 1e6)
        o, n = statistics.median(us["old"]), statistics.median(us["new"])
        print(f"{name:22s} old {o:7.1f} us, new {n:7.1f} us ({o / n:.2f}x); rounds old "
              f"{[round(x) for x in us['old']]}, new {[round(x) for x in us['new']]}")


if __name__ == "__main__":
    main()
