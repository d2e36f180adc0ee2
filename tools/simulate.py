"""``omnienc simulate``: simulate a request trace against a bucket grid: replays, eager runs,
fallbacks, padding and predicted GPU time. Also the trace, batching and cost options shared with
``tune``. ``omnienc replay`` is its older name, kept working."""

from __future__ import annotations

import argparse
import json
import sys

from omnienc.runtime.batching import BatchPolicy
from omnienc.runtime.config import RuntimeConfig
from omnienc.runtime.costs import CostModel
from omnienc.runtime.grid import BucketGrid, GridError
from omnienc.runtime.simulator import Batching, compare, simulate
from omnienc.runtime.trace import read_trace
from omnienc.tools.args import HelpFormatter, add_number, command

EPILOG = """\
trace format: JSON lines, one request per line, e.g.
  {"ts": 0.013, "modality": "vision", "grid_thw": [[1, 28, 28], [2, 16, 24]]}
  {"ts": 0.020, "modality": "audio", "frames": [1000, 370]}
  ts        arrival time in seconds since the trace started (a finite number >= 0)
  modality  "vision" or "audio"
  grid_thw  vision only: one [t, h, w] per image or video, in 16-px patches (h and w even);
            it needs t*h*w patches and t attention segments
  frames    audio only: the mel frame count of each clip (100 per second); a clip needs its
            frames rounded up to whole 100-frame chunks, and one segment
Record one with EncoderRuntime(trace_path=...) or TraceRecorder, or write a synthetic one with
omnienc tracegen.

batching: by default requests are batched as EncoderService batches them (runtime/batching.py): a
batch opens at the first pending request and closes --max-wait-ms later, --quiet-ms after its
last request if none follows meanwhile, or at --max-batch requests of both modalities, whichever
comes first; each batch's requests of one modality are
packed as one runtime call packs them. --step-ms S instead batches fixed S-ms windows (for
comparison with results batched that way; 0 = each request alone).

words (as in the runtime's stats):
  replay     a run of a graph bucket (size <= graphs_up_to): padded to the bucket, a CUDA graph
  eager run  a run of an eager bucket (size > graphs_up_to): its packed requests, unpadded
  fallback   a request that fits no bucket: it runs eagerly, alone
kinds of run (each priced by its own rule, and with --measure timed by the runtime):
  replay, exact_replay (a graph of the pack's exact layout, unpadded), exact_capture (a layout's
  second sighting: its eager run, then the capture), eager (an eager bucket's pack), merged (a
  batch's eager packs in one call), fallback
Predicted times are GPU milliseconds from a cost model (--costs; default: the packaged model of
the card, --card or the one --measure runs on, else omnienc/configs/costs_h200.yaml), measured with
omnienc capture --calibrate [--quick] on that card. A prediction with another card's model is
flagged as such.
"""


def add_trace_args(p: argparse.ArgumentParser) -> None:
    """The options shared by ``simulate`` and ``tune``: trace, batching, cost model."""
    p.add_argument("--trace", required=True, metavar="TRACE.jsonl", help="JSONL request trace (format below)")
    add_number(p, "--max-wait-ms", kind=float, lo=0, hi=60_000, unit="ms", default=None, metavar="MS",
               help="the service's wait after the first pending request, ms (default 2)")
    add_number(p, "--max-batch", lo=1, hi=100_000, unit="requests", default=None, metavar="N",
               help="the service's most requests per batch, both modalities (default 64)")
    add_number(p, "--quiet-ms", kind=float, hi=60_000, unit="ms", default=None, metavar="MS",
               help="the service's quiet_ms: a batch closes once no request arrived for this long "
               "(default off; negative: off)")
    add_number(p, "--step-ms", kind=float, lo=0, hi=3_600_000, unit="ms", default=None, metavar="MS",
               help="batch fixed windows of this many ms instead of the service's rule (older "
               "behaviour; 0: each request alone); not with --max-wait-ms/--max-batch")
    p.add_argument("--costs", default=None, metavar="FILE",
                   help="cost model YAML from omnienc capture --calibrate (default: the packaged model of the card)")
    p.add_argument("--card", default=None, metavar="NAME",
                   help="the card the prediction is for, as torch.cuda.get_device_name names it (default: the one "
                   "--measure runs on); a cost model from another card is flagged")
    p.add_argument("--exact-graphs", choices=["on", "off"], default=None,
                   help="the runtime's exact-layout graphs (default: off, as the runtime's default; on "
                   "captures a graph of each exact pack layout that comes back, for traffic whose layouts repeat)")


def batching_from_args(args: argparse.Namespace) -> Batching:
    """The ``BatchPolicy`` (or fixed window) the options ask for; ValueError on a bad combination."""
    if args.step_ms is not None:
        if args.max_wait_ms is not None or args.max_batch is not None or getattr(args, "quiet_ms", None) is not None:
            raise GridError("--step-ms (fixed windows) replaces the service's rule; leave out "
                            "--max-wait-ms, --max-batch and --quiet-ms, or --step-ms")
        if not args.step_ms >= 0:
            raise GridError(f"--step-ms {args.step_ms} is negative; pass 0 or more")
        return args.step_ms
    d = BatchPolicy()
    quiet = getattr(args, "quiet_ms", None)
    try:
        return BatchPolicy(d.max_wait_ms if args.max_wait_ms is None else args.max_wait_ms,
                           d.max_batch if args.max_batch is None else args.max_batch,
                           d.quiet_ms if quiet is None else (None if quiet < 0 else quiet))
    except ValueError as e:
        raise GridError(f"--max-wait-ms/--max-batch/--quiet-ms: {e}") from None


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Adds the ``simulate`` subcommand and its older name ``replay`` (not listed in the help); their
    ``func`` default is :func:`run`."""
    p = subparsers.add_parser("simulate", help="simulate a request trace against a bucket grid (predicted GPU time)",
                              **_PARSER)
    _arguments(p, "simulate")
    _arguments(subparsers.add_parser("replay", **_PARSER), "replay")
    return p


_PARSER = dict(
    formatter_class=HelpFormatter, epilog=EPILOG,
    description="Batch and pack a trace's requests into the grid's buckets the way the service and\n"
    "the runtime do, and report per bucket: replays or eager runs, units, padding and predicted\n"
    "GPU time; per modality: fallbacks and totals.")


def _arguments(p: argparse.ArgumentParser, name: str) -> None:
    add_trace_args(p)
    p.add_argument("--grid", default=None, help="YAML bucket grid (default: packaged grid)")
    p.add_argument("--busy", action="store_true",
                   help="model the worker busy for each batch's predicted time (arrivals meanwhile wait)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--json-out", default=None, metavar="FILE.json", help="also write the JSON report to FILE")
    p.add_argument("--measure", action="store_true",
                   help="also run the trace's batches through a real runtime (random weights at real sizes on "
                   "CUDA, reduced on the CPU; each batch on an idle device, as calibrated) and compare its "
                   "measured time with the prediction where the cost model was measured on the same kind "
                   "of device")
    p.add_argument("--device", default=None, help="with --measure: cuda or cpu (default: cuda if available)")
    p.set_defaults(func=command(name, run), command_name=name)


def config_from_args(args: argparse.Namespace) -> RuntimeConfig:
    """The runtime configuration the options ask for (``--exact-graphs``; absent: the runtime's default)."""
    exact = getattr(args, "exact_graphs", None)
    return RuntimeConfig() if exact is None else RuntimeConfig(exact_graphs=exact == "on")


def build_measure_encoders(device: str | None = None):
    """``(vision, audio, device)`` for ``measure``: random weights at the real sizes on CUDA (bf16),
    reduced on the CPU (float32)."""
    from .models import build_encoders, default_device

    device = device or default_device()
    cuda = device.startswith("cuda")
    vis, aud = build_encoders(None, device, "bfloat16" if cuda else "float32", "real" if cuda else "reduced")
    return vis, aud, device


def measure(records, grid, batching, device: str | None = None, config: RuntimeConfig | None = None,
            encoders=None) -> dict:
    """Runs the trace's batches (``group_records``) through an ``EncoderRuntime`` on ``grid``: random
    inputs of each record's shape, one ``encode`` per batch started on an idle device; returns the
    runtime's statistics (measured GPU ms per bucket and kind of run, per modality), the card, the
    wall time, whether exact-layout graphs were on and how many requests failed (each alone). The first batch runs once before, as a
    warm-up, with exact graphs off (its layouts are not sighted: the trace starts as the simulator's).

    Args:
        config: The runtime's configuration (``exact_graphs`` None: on with CUDA graphs; default off).
        encoders: ``build_measure_encoders``' result, to share between measurements.
    """
    import gc
    import time

    import torch

    from omnienc.runtime import AudioRequest, EncoderRuntime, VisionRequest
    from omnienc.runtime.calibrate import _card
    from omnienc.runtime.simulator import group_records

    vis, aud, device = encoders or build_measure_encoders(device)
    cuda = device.startswith("cuda")
    rt = EncoderRuntime(vision=vis, audio=aud, grid=grid, device=device, config=config)
    rt.capture(progress=False)
    exact = rt.exact_graphs

    def request(r):
        if r.modality == "vision":
            n = sum(t * h * w for t, h, w in r.grid_thw)
            return VisionRequest(torch.randn(n, vis.in_features, device=device), torch.tensor(r.grid_thw))
        return AudioRequest(torch.randn(aud.config.num_mel_bins, sum(r.frames), device=device), torch.tensor(r.frames))

    groups = group_records(records, batching)
    failed: list[str] = []  # a request that fails (too large for the bound, say) fails alone: counted, not raised
    with torch.inference_mode():
        rt.exact_graphs = False
        rt.launch([request(records[i]) for i in groups[0]]).results()  # warm-up of the first batch's shapes
        rt.exact_graphs = exact
        rt.reset_stats()
        t0 = time.perf_counter()
        for g in groups:
            reqs = [request(records[i]) for i in g]
            if cuda:
                torch.cuda.synchronize()
            failed += [str(o) for o in rt.launch(reqs).results() if isinstance(o, Exception)]
        wall_s = time.perf_counter() - t0
        stats = rt.stats()
        bound_units = {lane.modality: lane.bound_units for lane in rt.lanes() if lane.bound_units is not None}
    del rt
    gc.collect()  # the runtime's lanes hold cycles: its graphs and pool go now, not in a later capture
    if cuda:
        torch.cuda.empty_cache()
    return {"stats": stats, "wall_s": wall_s, "batches": len(groups), "device": device,
            "card": _card(torch.device(device)), "exact_graphs": exact, "bound_units": bound_units, "failed": len(failed),
            "first_failure": failed[0] if failed else None}


def run(args: argparse.Namespace) -> int:
    """Runs ``omnienc simulate``; returns 0, or 2 on bad input (message on stderr)."""
    try:
        if args.measure:  # before any work: the device the trace would run on
            from .models import device_from_arg

            device_from_arg(args.device)
        elif args.device is not None:
            raise GridError("--device is where --measure runs the trace; add --measure, or leave --device out")
        batching = batching_from_args(args)
        if args.busy and not isinstance(batching, BatchPolicy):
            raise GridError("--busy models the service's worker; it does not apply to --step-ms windows")
        if args.busy and args.measure:
            raise GridError("--measure runs each batch on an idle device; leave out --busy")
        grid = BucketGrid.default() if args.grid is None else BucketGrid.from_yaml(args.grid)
        costs = CostModel.load(args.costs, card=args.card) if args.costs or args.card or not args.measure else None
        records = read_trace(args.trace)
    except ValueError as e:  # GridError, TraceError, CostError
        print(f"omnienc {getattr(args, 'command_name', 'simulate')}: error: {e}", file=sys.stderr)
        return 2
    config, card, got = config_from_args(args), args.card, None
    if args.measure:
        got = measure(records, grid, batching, args.device, config)
        card = card or got["card"]
        costs = costs or CostModel.load(card=card)  # the packaged model of the card measuring
        config = config.replace(exact_graphs=got["exact_graphs"])  # as the runtime resolved it (off on the CPU)
    report = simulate(records, grid, batching, costs, busy=args.busy, config=config, card=card,
                      warmup=1 if got is not None else 0,  # measure's warm-up batch
                      bound_units=got["bound_units"] if got is not None else None)
    out = report.to_dict()
    if got is not None:
        cmp = compare(report, got["stats"])
        out["measured"] = {
            "card": got["card"], "batches": got["batches"], "wall_s": got["wall_s"],
            **{m: {"ms": c["measured_ms"], "predicted_ms": c["predicted_ms"]} for m, c in cmp["modalities"].items()},
            "ms": cmp["total"]["measured_ms"], "predicted_ms": cmp["total"]["predicted_ms"],
            "comparable": report.card_note is None, "comparison": cmp,
            "failed": got["failed"], "first_failure": got["first_failure"],
        }
        if report.card_note:
            out["measured"]["note"] = report.card_note
    if args.json_out:
        try:
            with open(args.json_out, "w", encoding="utf-8") as f:
                json.dump(out, f, indent=2)
        except OSError as e:
            print(f"omnienc {getattr(args, 'command_name', 'simulate')}: error: cannot write {args.json_out}: {e}",
                  file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(report.format_table(got["stats"] if got is not None else None))
    if got is not None:
        other = "" if report.card_note is None else " -- another card than the model's: " + report.card_note
        print(f"\nmeasured on {got['card']} ({got['batches']} batches, each on an idle device; "
              f"{got['wall_s']:.1f} s wall){other}")
        if got["failed"]:
            print(f"{got['failed']} requests failed in the runtime (not in the prediction); the first: "
                  f"{got['first_failure']}")
    return 0
