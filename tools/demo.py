"""``omnienc demo``: the main job on defaults, no checkpoint needed.

Random weights (real sizes on a GPU, reduced sizes on a CPU), synthetic images, a video and audios of
assorted sizes, the default bucket grid: capture, encode everything (on GPUs: through an
EncoderService over one runtime per visible GPU; on a CPU: in one runtime call), check each output
against the encoder run eagerly on that request alone, and print per-bucket stats and timings.
"""

from __future__ import annotations

import argparse
import time

from .args import HelpFormatter, add_number, command, error, progress_wanted
from .capture import load_grid

# (label, grid_thw) and (label, mel frames): what a chat workload sends.
IMAGES = [("image 448x448", [[1, 28, 28]]), ("image 224x224", [[1, 14, 14]]), ("image 1280x720", [[1, 46, 80]]),
          ("image 640x480", [[1, 30, 40]]), ("video 16 frames 448x448", [[8, 28, 28]])]
AUDIOS = [("audio 10 s", [1000]), ("audio 30 s", [3000]), ("audio 4.37 s", [437]), ("audio 1 s + 2.5 s", [100, 250])]


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("demo", help="encode synthetic images, a video and audios (no checkpoint needed)",
                              description=" ".join(__doc__.split("\n\n")[1].split()), formatter_class=HelpFormatter)
    p.add_argument("--device", default=None,
                   help="cuda (every visible GPU), cuda:N (that one) or cpu (default: cuda if available)")
    p.add_argument("--devices", default=None, metavar="0,1", help="CUDA device indices (default: every visible GPU)")
    p.add_argument("--grid", help="bucket grid YAML (default: the packaged configs/qwen3_omni.yaml)")
    p.add_argument("--sizes", choices=["real", "reduced"], default=None,
                   help="model sizes (default: real on CUDA, reduced on CPU)")
    add_number(p, "--repeats", lo=1, hi=10_000, default=None, metavar="N",
               help="timed repeats (default: 20 on CUDA, 1 on CPU)")
    p.set_defaults(func=command("demo", run))
    return p


def synthetic_requests(vis, aud):
    import torch

    from ..runtime import AudioRequest, VisionRequest

    reqs = [(label, VisionRequest(torch.rand(sum(t * h * w for t, h, w in g), vis.in_features) * 2 - 1, torch.tensor(g)))
            for label, g in IMAGES]
    reqs += [(label, AudioRequest(torch.randn(aud.config.num_mel_bins, sum(f)), torch.tensor(f))) for label, f in AUDIOS]
    return reqs


def _time(fn, device, repeats) -> float:
    """Median wall time of ``fn`` in ms (synchronizing CUDA)."""
    import torch

    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return sorted(times)[len(times) // 2]


def demo_devices(args) -> list:
    """The demo's devices: ``--devices``, else ``--device`` (``cuda``: every visible GPU); checked."""
    import torch

    from .models import default_device, parse_devices

    if getattr(args, "devices", None) is not None:
        if args.device is not None:
            raise ValueError(f"give --device or --devices, not both (got --device {args.device} --devices {args.devices})")
        return [torch.device("cuda", i) for i in parse_devices(args.devices)]
    try:
        device = torch.device(args.device or default_device())
    except RuntimeError:
        raise ValueError(f"--device {args.device!r}: use cuda, cuda:N or cpu") from None
    if device.type == "cuda":
        if device.index is None:
            if not torch.cuda.is_available():
                raise ValueError("--device cuda: no CUDA device is visible; use --device cpu")
            return [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
        parse_devices(str(device.index))  # it must exist
    elif device.type != "cpu":
        raise ValueError(f"--device {args.device!r}: use cuda, cuda:N or cpu")
    return [device]


def run(args) -> int:
    import torch

    from ..runtime import EncoderRuntime
    from .models import build_encoders, device_context, replicate

    try:
        devices = demo_devices(args)
        grid = load_grid(args.grid)
    except ValueError as e:
        return error("demo", str(e))
    device = devices[0]
    cuda = device.type == "cuda"
    sizes = args.sizes or ("real" if cuda else "reduced")
    dtype = "bfloat16" if cuda else "float32"
    repeats = args.repeats or (20 if cuda else 1)
    where = ", ".join(f"{d} {torch.cuda.get_device_name(d)}" for d in devices) if cuda else "CPU"
    print(f"omnienc demo on {where}: random weights, {sizes} sizes, {dtype}")
    if not cuda:
        print("  (no GPU: reduced model sizes, float32 (the CPU's bfloat16 kernels are slow), and no CUDA graphs:")
        print("   the runtime runs its graph buckets' code eagerly. Timings below say nothing about GPU speed.)")
    vis, aud = build_encoders(None, device, dtype, sizes)
    rts = []
    for k, d in enumerate(devices):  # one runtime per device, same weights (copied from the first)
        v, a = (vis, aud) if k == 0 else (replicate(vis, d), replicate(aud, d))
        with device_context(d):
            rt = EncoderRuntime(vision=v, audio=a, grid=grid, device=d)
            info = rt.capture(progress=progress_wanted())
        rts.append(rt)
        if rt.use_cuda_graphs:
            print(f"{d}: captured {info['graphs']} CUDA graphs in {info['capture_s']:.2f} s, graph pool "
                  f"{info['graph_memory_bytes'] / 2**20:.0f} MiB")
        else:
            print(f"no CUDA graphs on {device.type}: {grid.num_graphs} graph buckets warmed up eagerly in "
                  f"{info['capture_s']:.2f} s")
    with device_context(device):
        return _encode_and_time(rts, vis, aud, device, repeats)


def _encode_and_time(rts: list, vis, aud, device, repeats: int) -> int:
    """Encodes the synthetic requests (through a service over ``rts`` on GPUs), checks and times them."""
    import torch

    from ..runtime import EncoderService, VisionRequest

    rt = rts[0]
    cuda = device.type == "cuda"
    labelled = synthetic_requests(vis, aud)
    reqs = [r for _, r in labelled]
    with torch.inference_mode():
        if cuda:  # every GPU's runtime behind one service: each pack goes where it finishes first
            with EncoderService(rts, max_wait_ms=2) as svc:
                outs = [f.result() for f in [svc.submit(r) for r in reqs]]
        else:
            outs = rt.encode(reqs)
        print(f"\n{'request':26s} {'output':>14s} {'on':>7s} {'rel err vs eager alone':>24s}")
        for (label, r), o in zip(labelled, outs):
            if isinstance(r, VisionRequest):
                ref, _ = vis(r.pixel_values.to(device), r.grid_thw)
                extra = f" + {len(o.deepstack)} DeepStack"
            else:
                ref, extra = aud(r.input_features.to(device), r.feature_lens), ""
            got = o.embeds.to(device)
            err = ((got.float() - ref.float()).norm() / ref.float().norm()).item()
            print(f"{label:26s} {str(tuple(o.embeds.shape)):>14s} {str(o.embeds.device):>7s} {err:24.2e}{extra}")
        rt.reset_stats()
        dev_reqs = [type(r)(*(t.to(device) for t in (r.__dict__.values()))) for r in reqs]
        ms_runtime = _time(lambda: rt.encode(dev_reqs), device, repeats)
        stats = rt.stats()
        ms_eager = _time(lambda: [vis(r.pixel_values, r.grid_thw) if isinstance(r, VisionRequest)
                                  else aud(r.input_features, r.feature_lens) for r in dev_reqs], device, repeats)
    print(f"\nall {len(reqs)} requests: runtime {ms_runtime:.2f} ms per call vs native eager one call per request "
          f"{ms_eager:.2f} ms (median of {repeats}; inputs already on {device})")
    if cuda:
        pinned = [type(r)(*(t.pin_memory() if t.is_floating_point() else t for t in r.__dict__.values()))
                  for r in reqs]
        with EncoderService(rts, max_wait_ms=2) as svc:
            ms_service = _time(lambda: [f.result() for f in [svc.submit(r) for r in pinned]], device, repeats)
            served = " / ".join(f"{d['device']} {d['requests']}" for d in svc.stats()["devices"])
        print(f"through EncoderService over {len(rts)} GPU{'s' if len(rts) > 1 else ''}: {ms_service:.2f} ms for all "
              f"{len(reqs)} submitted at once (median of {repeats}; inputs in pinned CPU memory); requests "
              f"served: {served}")
    graphs = rt.use_cuda_graphs

    def count(n: int, word: str) -> str:
        return f"{n} {word}{'' if n == 1 else 's'}"

    graph_runs = (count(stats["replays"] // repeats, "graph replay") if graphs
                  else count(stats["replays"] // repeats, "graph-bucket run") + " (eager: no CUDA graphs)")
    print(f"per call: {graph_runs}, {count(stats['eager_runs'] // repeats, 'eager-bucket run')}, "
          f"{count(stats['fallbacks'] // repeats, 'fallback')} (fit no bucket), padding {stats['padded_share']:.1%}")
    print(f"\n{'bucket':>20s} {'runs':>6s} {'padded':>8s} {'ms each':>10s}")
    for m in ("vision", "audio"):
        for name, b in stats[m]["buckets"].items():
            if b["runs"]:
                kind = ("" if graphs else "  (graph bucket, run eagerly)") if b["graph"] else "  (eager bucket)"
                print(f"{m + ' ' + name:>20s} {b['runs']:6d} {b['padded_share']:8.1%} {b['ms_mean']:10.3f}{kind}")
    return 0
