"""``EncoderService`` under load on one or several GPUs: closed loop, throughput, idle latency.

The library of ``omnienc bench --devices`` (its throughput) and of the developer program
``benchmarks/service_bench.py`` (all three). Random real-size bf16 weights (``models.build_encoders``:
built once on the first device, copied to the others), the default grid, one runtime per device
captured on that device. Three measurements:

* **closed loop**: 8 client threads on one device (the first); each submits one request, waits for
  its result, submits the next, for ``seconds``. Requests/s against one ``rt.encode`` of the same 8
  requests together (median ms -> requests/s). Workloads image448 (grid [1, 28, 28]) and audio10s
  (1000 frames); inputs made once on that GPU.
* **throughput**: the first N requests of ``omnienc tracegen --rate 200`` (seed 0), all submitted at
  once through ``EncoderService(runtimes, max_pending=N)``, first over one runtime, then over all.
  Requests/s, and per device: requests, and GPU-busy share = the runtime's own measured replay and
  eager GPU ms (``rt.stats()``, CUDA events) over the run's wall time. Inputs are random, in pinned
  CPU memory (each request's pixel values a slice of one pinned pool at a random offset; mel features
  one pinned tensor per request): every device copies its requests' inputs alike. Inputs on one GPU
  served by another would make the two devices' streams wait for each other (``copy_`` between
  devices is a two-way barrier on both current streams).
* **latency**: one image448 request (inputs on the first GPU) on an idle service, submitted, waited
  for, repeated; median over ``latency_repeats``, on one device and on all.

Dispatch prices packs with the packaged cost model (``CostModel.load().run_ms``, or a cost file);
if it cannot load, with the service's stand-in ``default_cost`` (the report says which).
``tiny``: a CPU smoke run (reduced model sizes, requests scaled down, a few of each).

Function API: ``run_service_bench(...) -> dict`` (the JSON report) and ``format_markdown(report)``.
"""

from __future__ import annotations

import datetime as _dt
import random
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError

import torch

from omnienc.runtime import AudioRequest, EncoderRuntime, EncoderService, VisionRequest
from omnienc.runtime.service import default_cost
from omnienc.runtime.trace import TraceRecord
from omnienc.tools.models import build_encoders, device_context, replicate
from omnienc.tools.tracegen import generate_trace

PARTS = ("closed_loop", "throughput", "latency")
WORKLOADS = {"image448": ("vision", ((1, 28, 28),)), "audio10s": ("audio", (1000,))}
CLIENTS = 8
TRACE_RATE = 200.0
POOL_SLACK = 4096  # rows of the pinned pool beyond the largest request: room for random offsets
TIMEOUT_S = 120.0  # bound on any one wait for a result


# --- requests ---------------------------------------------------------------------------------------


def shrink(record: TraceRecord) -> TraceRecord:
    """A smaller request of the same kind (``--tiny``): at most 2 frames of 1/4 the sides, 1/8 the audio."""
    if record.modality == "vision":
        grid = tuple((min(t, 2), 2 * max(1, h // 8), 2 * max(1, w // 8)) for t, h, w in record.grid_thw)
        return TraceRecord(record.ts, "vision", grid_thw=grid)
    return TraceRecord(record.ts, "audio", frames=tuple(max(20, f // 8) for f in record.frames))


def make_request(modality: str, shape, vis, aud, device, generator: torch.Generator | None = None):
    """A request of ``shape`` (vision: grid triples; audio: frame counts) with fresh random inputs in
    the encoder's dtype on ``device``; sizes on the host."""
    if modality == "vision":
        rows = sum(t * h * w for t, h, w in shape)
        x = torch.randn(rows, vis.in_features, generator=generator).to(device=device, dtype=vis.dtype)
        return VisionRequest(x, torch.tensor(shape, dtype=torch.int64))
    x = torch.randn(aud.config.num_mel_bins, sum(shape), generator=generator).to(device=device, dtype=aud.dtype)
    return AudioRequest(x, torch.tensor(shape, dtype=torch.int64))


def trace_records(n: int, tiny: bool = False, seed: int = 0) -> list[TraceRecord]:
    """The first ``n`` records of ``tracegen --rate 200 --seed SEED`` (shrunk with ``tiny``)."""
    if n < 1:
        raise ValueError(f"--requests {n}: need at least 1")
    records = generate_trace(seconds=max(60.0, 1.5 * n / TRACE_RATE), rate=TRACE_RATE, seed=seed)[:n]
    return [shrink(r) for r in records] if tiny else records


def trace_requests(records: Sequence[TraceRecord], vis, aud, pin: bool, seed: int = 0) -> list:
    """Requests for ``records`` with random inputs on the CPU (pinned when ``pin``): vision pixel
    values are slices of one random pool at random offsets, audio features one tensor each."""
    gen, rng = torch.Generator().manual_seed(seed), random.Random(seed)
    rows = [sum(t * h * w for t, h, w in r.grid_thw) for r in records if r.modality == "vision"]
    frames = [sum(r.frames) for r in records if r.modality == "audio"]
    pool = torch.randn(max(rows, default=0) + POOL_SLACK, vis.in_features, generator=gen).to(vis.dtype)
    pool = pool.pin_memory() if pin else pool
    mel = torch.randn(aud.config.num_mel_bins, max(frames, default=0) + POOL_SLACK, generator=gen).to(aud.dtype)
    out = []
    for r in records:
        if r.modality == "vision":
            n = sum(t * h * w for t, h, w in r.grid_thw)
            at = rng.randrange(POOL_SLACK + 1)
            out.append(VisionRequest(pool[at : at + n], torch.tensor(r.grid_thw, dtype=torch.int64)))
        else:
            T = sum(r.frames)
            at = rng.randrange(POOL_SLACK + 1)
            x = mel[:, at : at + T].contiguous()
            out.append(AudioRequest(x.pin_memory() if pin else x, torch.tensor(r.frames, dtype=torch.int64)))
    return out


def summarize(records: Sequence[TraceRecord]) -> dict:
    vision = [r for r in records if r.modality == "vision"]
    audio = [r for r in records if r.modality == "audio"]
    return {"requests": len(records), "vision": len(vision), "audio": len(audio),
            "vision_patches": sum(t * h * w for r in vision for t, h, w in r.grid_thw),
            "audio_frames": sum(sum(r.frames) for r in audio)}


# --- runtimes and cost ------------------------------------------------------------------------------


def load_cost(path: str | None = None) -> tuple[Callable, str]:
    """``(cost, description)``: the tuner's cost model's ``run_ms``, or the service's stand-in if it
    cannot be loaded."""
    from omnienc.runtime.costs import CostModel

    try:
        model = CostModel.load(path)
        return model.run_ms, f"CostModel {model.describe()}"
    except Exception as e:  # noqa: BLE001 - dispatch still works with the stand-in
        return default_cost, f"service.default_cost (stand-in; cost model not loaded: {type(e).__name__}: {e})"


def build_runtimes(devices: Sequence[str], sizes: str, dtype: str, grid=None, log=print) -> tuple[list, list]:
    """One captured ``EncoderRuntime`` per device, same random weights (built on the first device,
    copied to the others); returns ``(runtimes, capture reports)``."""
    t0 = time.perf_counter()
    vis, aud = build_encoders(None, devices[0], dtype, sizes)
    runtimes, captures = [], []
    for k, dev in enumerate(devices):
        v, a = (vis, aud) if k == 0 else (replicate(vis, dev), replicate(aud, dev))
        with device_context(dev):
            rt = EncoderRuntime(vision=v, audio=a, grid=grid, device=dev)
            info = rt.capture(progress=False)
        runtimes.append(rt)
        captures.append({"device": str(rt.device), **info})
        log(f"{rt.device}: {info['graphs']} graphs captured in {info['capture_s']:.2f} s, "
            f"graph memory {info['graph_memory_bytes'] / 2**30:.2f} GiB")
    log(f"built and captured in {time.perf_counter() - t0:.1f} s")
    return runtimes, captures


def runtime_gpu_ms(rt) -> float:
    """GPU ms the runtime measured for its runs since its last ``reset_stats`` (replays, eager runs,
    fallbacks; CUDA events on a GPU, wall time on the CPU)."""
    s = rt.stats()
    return float(sum(s[m]["ms"] for m in ("vision", "audio") if m in s))


def _quantiles(ms: list[float]) -> dict:
    q = sorted(ms)
    return {"median_ms": statistics.median(q), "p10_ms": q[int(0.1 * (len(q) - 1))],
            "p90_ms": q[int(0.9 * (len(q) - 1))], "repeats": len(q)}


# --- the three measurements -------------------------------------------------------------------------


def encode_ms(rt, requests: list, repeats: int, warmup: int = 2) -> dict:
    """Wall ms of one ``rt.encode(requests)`` (waits for the results), quantiles over ``repeats``."""
    times = []
    with device_context(rt.device), torch.inference_mode():
        for i in range(warmup + repeats):
            t0 = time.perf_counter()
            rt.encode(requests)
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1e3)
    return _quantiles(times)


def closed_loop(rt, requests: list, seconds: float, *, max_wait_ms: float, max_batch: int, cost,
                encode_repeats: int = 20, warmup: int = 2, **options) -> dict:
    """One client thread per request of ``requests``, each submitting its request, waiting for the
    result and submitting again for ``seconds`` (longer if no request came back by then) over
    ``EncoderService([rt], **options)``; compared with one ``rt.encode(requests)``."""
    ref = encode_ms(rt, requests, encode_repeats)
    clients = len(requests)
    done_at: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    stop, start = threading.Event(), threading.Barrier(clients + 1)
    svc = EncoderService([rt], max_wait_ms=max_wait_ms, max_batch=max_batch, cost=cost, **options)

    def client(i: int) -> None:
        try:
            for _ in range(warmup):
                svc.submit(requests[i]).result(TIMEOUT_S)
            start.wait(TIMEOUT_S)
            while not stop.is_set():
                svc.submit(requests[i]).result(TIMEOUT_S)
                done_at[i].append(time.perf_counter())
        except threading.BrokenBarrierError:
            pass
        except Exception as e:  # noqa: BLE001 - reported, the others go on
            errors.append(f"client {i}: {type(e).__name__}: {e}")
            start.abort()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    try:
        start.wait(TIMEOUT_S)
        t0, b0 = time.perf_counter(), svc.stats()["batches"]
        time.sleep(seconds)
        # a window shorter than one round (a slow or busy host) stays open until a request is back:
        # a rate of no requests measures nothing
        while not errors and not any(ts and ts[-1] >= t0 for ts in done_at) and time.perf_counter() - t0 < TIMEOUT_S:
            time.sleep(1e-3)
        t1, b1 = time.perf_counter(), svc.stats()["batches"]
    except threading.BrokenBarrierError:
        t0 = t1 = time.perf_counter()
        b0 = b1 = 0
    stop.set()
    for t in threads:
        t.join(TIMEOUT_S)
    svc.close(timeout=30)
    if errors:
        raise RuntimeError("; ".join(errors))
    n = sum(t0 <= t <= t1 for ts in done_at for t in ts)
    rps = n / (t1 - t0) if t1 > t0 else 0.0
    encode_rps = clients / (ref["median_ms"] / 1e3)
    return {"clients": clients, "seconds": t1 - t0, "requests": n, "requests_per_s": rps,
            "batches": b1 - b0, "requests_per_batch": n / (b1 - b0) if b1 > b0 else None,
            "encode_all_ms": ref, "encode_all_requests_per_s": encode_rps, "ratio": rps / encode_rps}


def throughput_run(runtimes: Sequence, requests: list, *, max_wait_ms: float, max_batch: int, cost,
                   timeout_s: float | None = None, quiet_ms: float | None = None) -> dict:
    """Submits every request at once to ``EncoderService(runtimes, max_pending=len(requests))`` and
    waits for all (at most ``timeout_s``, default 120 s or 50 ms per request); requests/s and, per
    device, requests, batches and GPU-busy share."""
    n = len(requests)
    if n < 1:
        raise ValueError("throughput_run needs at least one request")
    timeout_s = timeout_s if timeout_s is not None else max(TIMEOUT_S, 0.05 * n)
    for rt in runtimes:
        rt.reset_stats()
    lock, all_done = threading.Lock(), threading.Event()
    tally = {"ok": 0, "failed": 0, "first_error": None}

    def finished(f) -> None:
        try:
            error = f.exception()
        except CancelledError as e:
            error = e
        with lock:
            tally["ok" if error is None else "failed"] += 1
            if error is not None and tally["first_error"] is None:
                tally["first_error"] = f"{type(error).__name__}: {error}"
            if tally["ok"] + tally["failed"] == n:
                all_done.set()

    svc = EncoderService(list(runtimes), max_wait_ms=max_wait_ms, max_batch=max_batch, max_pending=n, cost=cost,
                         quiet_ms=quiet_ms)
    completed = False
    try:
        t0 = time.perf_counter()
        for r in requests:
            svc.submit(r).add_done_callback(finished)  # results are dropped as they come (device memory)
        completed = all_done.wait(timeout_s)
        wall = time.perf_counter() - t0
    finally:
        svc.close(cancel_pending=not completed, timeout=30)
    stats = svc.stats()
    devices = []
    for rt, d in zip(runtimes, stats["devices"]):
        gpu_ms = runtime_gpu_ms(rt)
        devices.append({"device": d["device"], "requests": d["requests"], "batches": d["batches"],
                        "gpu_ms": gpu_ms, "gpu_busy_share": gpu_ms / 1e3 / wall, "service_busy_s": d["busy_s"],
                        "healthy": d["healthy"], "error": d["error"]})
    out = {"devices": [d["device"] for d in devices], "requests": n, "completed": tally["ok"],
           "failed": tally["failed"], "first_error": tally["first_error"], "timed_out": not completed,
           "wall_s": wall, "requests_per_s": tally["ok"] / wall, "batches": stats["batches"], "per_device": devices}
    if not completed:
        out["first_error"] = out["first_error"] or f"not finished within {timeout_s:g} s"
    return out


def idle_latency(runtimes: Sequence, request, repeats: int, *, max_wait_ms: float, max_batch: int, cost,
                 warmup: int = 3, quiet_ms: float | None = None) -> dict:
    """Submit-to-result ms of one request on an otherwise idle ``EncoderService(runtimes)``."""
    times = []
    with EncoderService(list(runtimes), max_wait_ms=max_wait_ms, max_batch=max_batch, cost=cost,
                        quiet_ms=quiet_ms) as svc:
        for i in range(warmup + repeats):
            t0 = time.perf_counter()
            svc.submit(request).result(TIMEOUT_S)
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1e3)
        served = [d["requests"] for d in svc.stats()["devices"]]
    return {"devices": [str(rt.device) for rt in runtimes], **_quantiles(times), "served_per_device": served}


# --- the program ------------------------------------------------------------------------------------


def default_devices() -> list[str]:
    """Every visible GPU, or the CPU without one."""
    n = torch.cuda.device_count()
    return [f"cuda:{i}" for i in range(n)] if n else ["cpu"]


def _card(device) -> str:
    if getattr(device, "type", None) == "cuda":
        return torch.cuda.get_device_name(device)
    return "CPU" if str(device) == "cpu" else str(device)


def run_service_bench(devices: Sequence[str] | None = None, requests: int | None = None, tiny: bool = False,
                      parts: Sequence[str] = PARTS, seconds: float | None = None,
                      latency_repeats: int | None = None, encode_repeats: int | None = None,
                      max_wait_ms: float = 2.0, max_batch: int = 64, grid=None, grid_name: str = "default",
                      costs: str | None = None, seed: int = 0, log=print, command: str | None = None,
                      quiet_ms: float | None = None) -> dict:
    """Runs the chosen ``parts`` and returns the report (what ``--out`` writes).

    Args:
        devices: ``["cuda:0", "cuda:1"]`` (default: every visible GPU, or the CPU).
        requests: throughput requests (default 2000; 24 with ``tiny``).
        tiny: reduced model sizes, requests scaled down (``shrink``), short runs (a CPU smoke test).
        parts: a subset of ``PARTS``.
        seconds: closed-loop window per workload (default 3; 0.3 with ``tiny``).
    """
    bad = [p for p in parts if p not in PARTS]
    if bad:
        raise ValueError(f"unknown part(s) {bad}; choose from {list(PARTS)}")
    requests = requests if requests is not None else (24 if tiny else 2000)
    seconds = seconds if seconds is not None else (0.3 if tiny else 3.0)
    latency_repeats = latency_repeats if latency_repeats is not None else (5 if tiny else 50)
    encode_repeats = encode_repeats if encode_repeats is not None else (3 if tiny else 20)
    if requests < 1 or seconds <= 0 or latency_repeats < 1 or encode_repeats < 1:
        raise ValueError("need requests >= 1, seconds > 0, latency and encode repeats >= 1")
    cost, cost_name = load_cost(costs)
    report: dict = {"meta": {}, "capture": [], "errors": []}
    devices = list(devices) if devices else default_devices()
    cuda = torch.device(devices[0]).type == "cuda"
    dtype = "bfloat16" if cuda else "float32"
    runtimes, report["capture"] = build_runtimes(devices, "reduced" if tiny else "real", dtype, grid, log)
    first = runtimes[0]
    vis, aud = first.vision.encoder, first.audio.encoder
    pin = first.device.type == "cuda"
    report["meta"] = {
        "cards": [_card(rt.device) for rt in runtimes],
        "devices": [str(rt.device) for rt in runtimes], "torch": torch.__version__,
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command if command is not None else " ".join(["python benchmarks/service_bench.py", *sys.argv[1:]]),
        "model": ("reduced sizes" if tiny else "Qwen3-Omni-30B-A3B encoder sizes") + ", random weights",
        "dtype": str(vis.dtype).replace("torch.", ""), "grid": grid_name, "dispatch_cost": cost_name,
        "service": {"max_wait_ms": max_wait_ms, "max_batch": max_batch, "quiet_ms": quiet_ms},
    }

    def part(name: str, body: Callable[[], object]) -> None:
        if name not in parts:
            return
        t0 = time.perf_counter()
        try:
            report[name] = body()
        except Exception as e:  # keep the other parts; the report lists the failure
            traceback.print_exc(file=sys.stderr)
            report["errors"].append(f"{name}: {type(e).__name__}: {e}".splitlines()[0][:300])
        log(f"{name}: {time.perf_counter() - t0:.1f} s")

    service = {"max_wait_ms": max_wait_ms, "max_batch": max_batch, "cost": cost, "quiet_ms": quiet_ms}

    def closed() -> dict:
        out = {}
        for name, (modality, shape) in WORKLOADS.items():
            shape = _shape(modality, shape, tiny)
            reqs = [make_request(modality, shape, vis, aud, first.device) for _ in range(CLIENTS)]
            out[name] = {"shape": [list(s) if isinstance(s, tuple) else s for s in shape],
                         **closed_loop(first, reqs, seconds, encode_repeats=encode_repeats, **service)}
        return out

    def throughput() -> dict:
        records = trace_records(requests, tiny, seed)
        reqs = trace_requests(records, vis, aud, pin, seed)
        warm = reqs[: min(len(reqs), 64 if not tiny else 4)]
        for rt in runtimes:  # first runs of eager sizes (allocator, kernels) out of the timed runs
            with device_context(rt.device), torch.inference_mode():
                rt.encode(warm)
        runs = [throughput_run(runtimes[:1], reqs, **service)]
        if len(runtimes) > 1:
            runs.append(throughput_run(runtimes, reqs, **service))
        return {"trace": f"omnienc tracegen --rate {TRACE_RATE:g} --seed {seed}, first {requests}"
                         + (" (shrunk: --tiny)" if tiny else ""),
                "inputs": "pinned CPU memory" if pin else "CPU memory", **summarize(records), "runs": runs,
                "speedup": runs[-1]["requests_per_s"] / runs[0]["requests_per_s"] if runs[0]["requests_per_s"] else None}

    def latency() -> dict:
        modality, shape = WORKLOADS["image448"]
        req = make_request(modality, _shape(modality, shape, tiny), vis, aud, first.device)
        runs = [idle_latency(runtimes[:1], req, latency_repeats, **service)]
        if len(runtimes) > 1:
            runs.append(idle_latency(runtimes, req, latency_repeats, **service))
        return {"workload": "image448", "runs": runs, "ratio": runs[-1]["median_ms"] / runs[0]["median_ms"]}

    part("closed_loop", closed)
    part("latency", latency)
    part("throughput", throughput)
    return report


def _shape(modality: str, shape, tiny: bool):
    """A workload's request shape, shrunk with ``tiny``."""
    if not tiny:
        return shape
    record = TraceRecord(0.0, modality, **({"grid_thw": shape} if modality == "vision" else {"frames": shape}))
    small = shrink(record)
    return small.grid_thw if modality == "vision" else small.frames


def format_markdown(report: dict, title: bool = True) -> str:
    """The report's tables (the parts it holds) and context lines."""
    meta = report["meta"]
    lines = ["# omnienc service bench", ""] if title else ["## EncoderService over several devices", ""]
    lines.append(f"- devices: {', '.join(f'{d} ({c})' for d, c in zip(meta['devices'], meta['cards']))}; "
                 f"torch {meta['torch']}; {meta['date']}")
    lines.append(f"- command: `{meta['command']}`")
    svc = meta["service"]
    lines.append(f"- model: {meta['model']}, {meta['dtype']}; grid {meta['grid']}; service max_wait_ms "
                 f"{svc['max_wait_ms']:g}, max_batch {svc['max_batch']}; dispatch by {meta['dispatch_cost']}")
    for c in report.get("capture", []):
        lines.append(f"- {c['device']}: {c['graphs']} graphs, capture {c['capture_s']:.2f} s, "
                     f"graph memory {c['graph_memory_bytes'] / 2**30:.2f} GiB")
    cl = report.get("closed_loop")
    if cl:
        lines += ["", f"### Closed loop: {next(iter(cl.values()))['clients']} clients on "
                  f"{meta['devices'][0]}, each waits for its result, then submits the next", "",
                  "| workload | service req/s | req per batch | one encode of all: ms (p10-p90) | its req/s | "
                  "ratio (target >= 0.9) |", "|---|---:|---:|---:|---:|---:|"]
        for name, r in cl.items():
            e = r["encode_all_ms"]
            per = f"{r['requests_per_batch']:.1f}" if r["requests_per_batch"] else "-"
            lines.append(f"| {name} | {r['requests_per_s']:.0f} | {per} | {e['median_ms']:.2f} "
                         f"({e['p10_ms']:.2f}-{e['p90_ms']:.2f}) | {r['encode_all_requests_per_s']:.0f} | "
                         f"{r['ratio']:.2f} |")
    tp = report.get("throughput")
    if tp:
        lines += ["", f"### Throughput: {tp['trace']}, all submitted at once", "",
                  f"{tp['requests']} requests ({tp['vision']} vision, {tp['vision_patches']} patches; {tp['audio']} "
                  f"audio, {tp['audio_frames']} frames); inputs in {tp['inputs']}.", "",
                  "| devices | wall s | req/s | vs 1 device | requests per device | GPU-busy share per device | failed |",
                  "|---|---:|---:|---:|---|---|---:|"]
        base = tp["runs"][0]["requests_per_s"]
        for r in tp["runs"]:
            per = r["per_device"]
            lines.append(f"| {', '.join(r['devices'])} | {r['wall_s']:.2f} | {r['requests_per_s']:.1f} | "
                         f"{r['requests_per_s'] / base if base else 0:.2f}x | "
                         f"{' / '.join(str(d['requests']) for d in per)} | "
                         f"{' / '.join(format(d['gpu_busy_share'], '.0%') for d in per)} | {r['failed']} |")
        lines.append("")
        lines.append("Targets: >= 1.85x one device on 2 (>= 3.5x on 4); each device busy >= 85% of the run. "
                     "GPU-busy share: the runtime's measured replay + eager GPU ms over the run's wall time.")
    lat = report.get("latency")
    if lat:
        lines += ["", f"### Latency: one {lat['workload']} on an idle service", "",
                  "| devices | median ms | p10-p90 ms | served per device | vs 1 device (target <= 1.10) |",
                  "|---|---:|---:|---|---:|"]
        base = lat["runs"][0]["median_ms"]
        for r in lat["runs"]:
            lines.append(f"| {', '.join(r['devices'])} | {r['median_ms']:.2f} | {r['p10_ms']:.2f}-{r['p90_ms']:.2f} | "
                         f"{' / '.join(map(str, r['served_per_device']))} | {r['median_ms'] / base:.2f} |")
    if title and report.get("errors"):  # without a title it is a section of a report that lists them
        lines += ["", "Errors:"] + [f"- {e}" for e in report["errors"]]
    return "\n".join(lines) + "\n"


__all__ = ["PARTS", "WORKLOADS", "build_runtimes", "closed_loop", "format_markdown", "idle_latency", "load_cost",
           "run_service_bench", "throughput_run", "trace_records", "trace_requests"]

