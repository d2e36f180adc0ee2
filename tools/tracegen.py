"""``omnienc tracegen``: a synthetic but realistic request trace for ``simulate`` and ``tune``.

Poisson arrivals at ``rate`` requests per second, a mix of:

* chat images (50%): common photo and screenshot aspect ratios, long side 224..1280 px (30% at
  the 1280 px cap, as large photos get downscaled), resized the way Qwen's processor does: each
  side rounded to a multiple of 32 px (2 patches of 16 px), pixels kept in
  [224 x 224, 1280 x 1280]; 15% of requests carry 2..4 images.
* short videos (10%): 2..16 temporal patches (4..32 frames), long side 224..448 px.
* speech (40%): 1..30 s, log-normal around 6 s, 100 mel frames per second (non-round counts);
  10% of requests carry 2..3 clips.
"""

from __future__ import annotations

import argparse
import math
import random
from collections import Counter
from collections.abc import Iterator

from omnienc.runtime.trace import TraceRecord, write_trace
from omnienc.tools.args import HelpFormatter, UsageError, add_number, check_output, command, error

PATCH_PX = 16  # ViT patch side in pixels
FACTOR_PX = 2 * PATCH_PX  # sides are multiples of 2 patches (2x2 merge)
IMAGE_PIXELS = (224 * 224, 1280 * 1280)
VIDEO_PIXELS = (128 * 128, 448 * 448)
IMAGE_ASPECTS = {(1, 1): 0.2, (4, 3): 0.2, (3, 4): 0.15, (16, 9): 0.15, (9, 16): 0.1, (3, 2): 0.1,
                 (16, 10): 0.1}  # (width, height) of photos and screenshots
VIDEO_ASPECTS = {(16, 9): 0.5, (4, 3): 0.2, (1, 1): 0.1, (9, 16): 0.2}
MAX_REQUESTS = 10_000_000  # expected requests (seconds x rate) of one trace: ~0.6 GB of JSON lines, minutes to write


def resize_patches(height: float, width: float, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """(h, w) in patches of an image after processor-style resizing.

    Each side is rounded to a multiple of 32 px, then both are scaled together (keeping the aspect
    ratio) until the area is within [min_pixels, max_pixels]. Both results are even.
    """
    f = FACTOR_PX
    h, w = max(f, round(height / f) * f), max(f, round(width / f) * f)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h, w = max(f, math.floor(height / beta / f) * f), max(f, math.floor(width / beta / f) * f)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / f) * f, math.ceil(width * beta / f) * f
    return h // PATCH_PX, w // PATCH_PX


def _pick(rng: random.Random, weights: dict[tuple[int, int], float]) -> tuple[int, int]:
    return rng.choices(list(weights), list(weights.values()))[0]


def _image(rng: random.Random) -> tuple[int, int, int]:
    aw, ah = _pick(rng, IMAGE_ASPECTS)
    long = 1280.0 if rng.random() < 0.3 else math.exp(rng.uniform(math.log(224), math.log(1280)))
    scale = long / max(aw, ah)
    return (1, *resize_patches(ah * scale, aw * scale, *IMAGE_PIXELS))


def _video(rng: random.Random) -> tuple[int, int, int]:
    aw, ah = _pick(rng, VIDEO_ASPECTS)
    scale = rng.uniform(224, 448) / max(aw, ah)
    return (rng.randint(2, 16), *resize_patches(ah * scale, aw * scale, *VIDEO_PIXELS))


def _speech(rng: random.Random) -> int:
    seconds = min(30.0, max(1.0, rng.lognormvariate(math.log(6.0), 0.8)))
    return round(seconds * 100)


def iter_trace(seconds: float = 60.0, rate: float = 20.0, seed: int = 0) -> Iterator[TraceRecord]:
    """The records of ``generate_trace`` one at a time (a long trace streams to its file in bounded
    memory). Raises ``ValueError`` for a length or rate that is not finite and >= 0 / > 0."""
    for name, value, positive in (("seconds", seconds, False), ("rate", rate, True)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or value < 0 or (positive and value == 0):
            raise ValueError(f"{name}={value!r}: need a finite number {'> 0' if positive else '>= 0'}")
    return _records(float(seconds), float(rate), seed)


def _records(seconds: float, rate: float, seed: int) -> Iterator[TraceRecord]:
    rng = random.Random(seed)
    ts = rng.expovariate(rate)
    while ts < seconds:
        t = round(ts, 6)
        kind = rng.random()
        if kind < 0.5:
            n = rng.randint(2, 4) if rng.random() < 0.15 else 1
            yield TraceRecord(t, "vision", grid_thw=tuple(_image(rng) for _ in range(n)))
        elif kind < 0.6:
            yield TraceRecord(t, "vision", grid_thw=(_video(rng),))
        else:
            n = rng.randint(2, 3) if rng.random() < 0.1 else 1
            yield TraceRecord(t, "audio", frames=tuple(_speech(rng) for _ in range(n)))
        ts += rng.expovariate(rate)


def generate_trace(seconds: float = 60.0, rate: float = 20.0, seed: int = 0) -> list[TraceRecord]:
    """Generates a synthetic trace (see the module docstring for the mix).

    Args:
        seconds: Trace length; arrivals have ``0 <= ts < seconds``.
        rate: Mean requests per second (Poisson arrivals).
        seed: Seed; the same arguments give the same trace.

    Returns:
        Records in ``ts`` order.

    Raises:
        ValueError: a length or rate that is not finite and >= 0 / > 0, or more than
            ``MAX_REQUESTS`` expected records (``iter_trace`` streams longer ones).
    """
    records = iter_trace(seconds, rate, seed)
    if seconds * rate > MAX_REQUESTS:
        raise ValueError(f"seconds={seconds:g} x rate={rate:g} = {seconds * rate:,.0f} requests expected, above the "
                         f"{MAX_REQUESTS:,} a list holds here (about 2.5 GB of records); stream them with iter_trace")
    return list(records)


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Adds the ``tracegen`` subcommand; its ``func`` default is :func:`run`."""
    p = subparsers.add_parser(
        "tracegen", help="write a synthetic request trace", formatter_class=HelpFormatter,
        description="Write a synthetic trace of chat images, short videos and speech clips with "
        "Poisson arrivals, for omnienc simulate and omnienc tune. The file is written whole or not at all.")
    p.add_argument("-o", "--output", required=True, metavar="TRACE.jsonl", help="JSONL trace to write")
    add_number(p, "--seconds", kind=float, lo=0, open_lo=True, hi=1e7, unit="s", default=60.0, metavar="S",
               help="trace length (default 60)")
    add_number(p, "--rate", kind=float, lo=0, open_lo=True, hi=1e5, unit="requests per second", default=20.0,
               metavar="PER_S",
               help="requests per second (default 20)")
    add_number(p, "--seed", lo=0, hi=2**32 - 1, default=0, metavar="N", help="random seed (default 0)")
    p.set_defaults(func=command("tracegen", run))
    return p


def run(args: argparse.Namespace) -> int:
    """Runs ``omnienc tracegen``; returns 0, or 2 on bad input (message on stderr)."""
    from omnienc.runtime.atomic import atomic_path

    check_output("-o", args.output, (".jsonl",))
    expected = args.seconds * args.rate
    if expected > MAX_REQUESTS:
        raise UsageError(f"--seconds {args.seconds:g} x --rate {args.rate:g} = {expected:,.0f} requests expected, "
                         f"above the {MAX_REQUESTS:,} a trace may hold (~0.6 GB, minutes to write); shorten it "
                         "or lower the rate")
    counts: Counter = Counter()

    def counted(records):
        for r in records:
            counts[r.modality] += 1
            yield r

    try:
        with atomic_path(args.output) as tmp:
            write_trace(tmp, counted(iter_trace(args.seconds, args.rate, args.seed)))
    except (ValueError, OSError) as e:
        return error("tracegen", f"{e}; nothing was written")
    print(f"wrote {counts.total()} requests ({counts['vision']} vision, {counts['audio']} audio) "
          f"over {args.seconds:g} s to {args.output}")
    return 0
