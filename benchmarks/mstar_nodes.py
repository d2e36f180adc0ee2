"""M*'s stock Qwen3-Omni encoder nodes vs omnienc's, driven through the same M* engine calls.

    python benchmarks/mstar_nodes.py --out DIR            # on a GPU: real encoder sizes, bf16
    python benchmarks/mstar_nodes.py --sizes tiny --repeats 2 --warmup 1   # a CPU smoke run

What it does (benchmarks/mstar_gpu.sh installs what it needs on the GPU machine):

1. Writes a checkpoint directory as M* loads one (``mstar_harness.write_checkpoint``: real encoder
   sizes, random bf16 weights, a small Thinker config and tokenizer; nothing is downloaded), and
   keeps transformers' float32 encoders holding the same weights as the accuracy reference.
2. omnienc: ``Qwen3OmniOmniencModel`` loaded by M*'s ``EngineManager.build`` (``get_submodule`` for
   both encoder nodes: weights, runtime, grid capture; timed) and ``warmup_all``.
   Stock: the same model's ``stock_encoder_nodes`` (M*'s ``Qwen3OmniModel`` code: transformers'
   encoders with FlashAttention-2 where installed, else transformers' SDPA; cast to bf16 as the
   engine casts them) in two M* engines: one as loaded (eager), one after ``Engine.warmup``, which
   applies M*'s ``torch.compile`` (``_compile_submodules``: mode default, dynamic None).
3. Workloads, each one M* step per node (vision, then audio), inputs as M*'s walks hand them
   (float32 features, int64 grids and lengths, on the GPU): ``image448`` (one 448x448 image),
   ``audio10s`` (one 10 s clip), ``mixed32`` (the 32 requests of ``omnienc tracegen --rate 20 --seed
   0``, ``omnienc.tools.workloads.mixed_requests``: one vision step of its 18 vision requests and one
   audio step of its 14 audio requests). omnienc runs as configured (exact-layout graphs off by
   default: every workload replays bucket graphs or runs eagerly; a runtime built with them on still
   runs ``mixed32`` without them, as a mix does not come back in serving).
4. Times each (engine, workload) as the worker runs a step (``mstar_harness.step``: prepare_inputs,
   exec_and_postprocess, wait for the device, check_stop): wall-clock and a CUDA-event span, medians
   after warm-up (the compiled engine's warm-up compiles; its time is reported).
5. Accuracy: every request's outputs of the three engines against transformers' float32 encoders
   on the same weights; omnienc passes where its relative error is at most 1.5x the stock bf16
   node's and its cosine similarity at least 0.999 (tests/test_gpu.py's rule); shapes and dtypes
   must equal the stock node's.

Writes ``mstar_nodes.json`` and ``mstar_nodes.md`` (a short table) under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import mstar_harness  # noqa: E402

# Issue targets (an H100): per request >= 5x the faster stock column, the 32-request batch >= 4x,
# node creation including capture <= 10 s.
TARGET_SPEEDUP = {"image448": 5.0, "audio10s": 5.0, "mixed32": 4.0}
TARGET_CREATE_S = 10.0
COLUMNS = ("stock_eager", "stock_compiled", "omnienc")
ERR_FLOOR = 1e-5  # float32 round-off: in a float32 run (CPU) both columns sit at or below it


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def configs(sizes: str):
    from omnienc.tools.models import real_configs, tiny_configs

    v, a = real_configs() if sizes == "real" else tiny_configs()
    v._attn_implementation = a._attn_implementation = "sdpa"  # the float32 reference
    return v, a


def workloads(vcfg) -> dict[str, list]:
    """Per workload its requests: ``("vision", ((t, h, w), ...))`` or ``("audio", (frames, ...))``."""
    from omnienc.tools.workloads import mixed_requests

    return {"image448": [("vision", ((1, 28, 28),))], "audio10s": [("audio", (1000,))],
            "mixed32": list(mixed_requests())}


def make_inputs(requests, vcfg, acfg, device) -> dict[str, dict]:
    """Per node, {request id: M*'s inputs}: float32 features and int64 grids/lengths on ``device``;
    a one-item grid 1-D, as M*'s ``process_prompt`` hands it."""
    in_features = vcfg.in_channels * vcfg.temporal_patch_size * vcfg.patch_size**2
    nodes: dict[str, dict] = {"vision_encoder": {}, "audio_encoder": {}}
    for i, (kind, items) in enumerate(requests):
        if kind == "vision":
            grid = torch.tensor(items, dtype=torch.int64, device=device)
            n = sum(t * h * w for t, h, w in items)
            nodes["vision_encoder"][f"r{i}"] = {
                "pixel_values": [torch.randn(n, in_features, device=device)],
                "image_grid_thw": [grid[0] if len(items) == 1 else grid]}
        else:
            nodes["audio_encoder"][f"r{i}"] = {
                "audio_features": [torch.randn(acfg.num_mel_bins, sum(items), device=device)],
                "audio_seqlens": [torch.tensor(items, dtype=torch.long, device=device)]}
    return {k: v for k, v in nodes.items() if v}


WALK = {"vision_encoder": "prefill_vision", "audio_encoder": "prefill_audio"}


def run_workload(engine, inputs: dict) -> dict:
    """Each node's step; {request id: outputs}. Raises if any request failed."""
    outputs = {}
    for node, reqs in inputs.items():
        out, failed = mstar_harness.step(engine, node, WALK[node], reqs)
        if failed:
            raise RuntimeError(f"{node}: requests failed: {failed}")
        outputs.update(out)
    return outputs


def time_workload(engine, inputs: dict, warmup: int, repeats: int, cuda: bool) -> dict:
    warm = []
    for _ in range(warmup):
        t0 = time.perf_counter()
        run_workload(engine, inputs)
        warm.append((time.perf_counter() - t0) * 1e3)
    walls, spans = [], []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        t0 = time.perf_counter()
        run_workload(engine, inputs)  # ends after waiting for the device
        walls.append((time.perf_counter() - t0) * 1e3)
        if cuda:
            end.record()
            end.synchronize()
            spans.append(start.elapsed_time(end))
    return {"wall_ms": statistics.median(walls), "wall_ms_all": walls,
            "event_ms": statistics.median(spans) if spans else None, "warmup_ms": warm}


@torch.inference_mode()
def reference(hf_vision, hf_audio, inputs: dict) -> dict:
    """transformers' float32 encoders on each request alone (what the stock node computes, in fp32)."""
    ref = {}
    for rid, x in inputs.get("vision_encoder", {}).items():
        grid = x["image_grid_thw"][0]
        out = hf_vision(x["pixel_values"][0], grid_thw=grid.reshape(-1, 3))
        ref[rid] = {"vision_embeds": [out.pooler_output], "deepstack": list(out.deepstack_features)}
    for rid, x in inputs.get("audio_encoder", {}).items():
        out = hf_audio(x["audio_features"][0], feature_lens=x["audio_seqlens"][0])
        ref[rid] = {"audio_embeds": [out.last_hidden_state]}
    return ref


def rel_err(a, b) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def cosine(a, b) -> float:
    return torch.nn.functional.cosine_similarity(a.double().flatten(), b.double().flatten(), dim=0).item()


def accuracy(outs: dict[str, dict], ref: dict) -> dict:
    """Per output name: worst rel err of each column vs the float32 reference, omnienc vs stock, and
    whether every request passes (omnienc err <= 1.5x stock eager's, cosine >= 0.999, same
    shapes and dtypes as the stock node)."""
    rows: dict[str, dict] = {}
    ok = True
    for rid, r in ref.items():
        for name, tensors in r.items():
            for j, t in enumerate(tensors):
                key = name if len(tensors) == 1 else f"{name}[{j}]"
                row = rows.setdefault(key, {"requests": 0, "omnienc_vs_stock": 0.0, "min_cosine": 1.0,
                                            "worst_ratio": 0.0, **{f"{c}_err": 0.0 for c in outs}})
                row["requests"] += 1
                errs = {c: rel_err(outs[c][rid][name][j], t) for c in outs}
                for c, e in errs.items():
                    row[f"{c}_err"] = max(row[f"{c}_err"], e)
                ours, stock = outs["omnienc"][rid][name][j], outs["stock_eager"][rid][name][j]
                same = ours.shape == stock.shape and ours.dtype == stock.dtype
                row["omnienc_vs_stock"] = max(row["omnienc_vs_stock"], rel_err(ours, stock))
                c = cosine(ours, t)
                row["min_cosine"] = min(row["min_cosine"], c)
                ratio = errs["omnienc"] / max(errs["stock_eager"], ERR_FLOOR)
                row["worst_ratio"] = max(row["worst_ratio"], ratio)
                row["dtype"] = str(ours.dtype).removeprefix("torch.")
                passed = same and ratio <= 1.5 and c >= 0.999
                row["pass"] = row.get("pass", True) and passed
                ok &= passed
    return {"ok": ok, "outputs": rows}


def load_engines(om, root: Path, device: torch.device, dtype: torch.dtype) -> dict:
    from mstar.engine.engine import Engine

    model = om.Qwen3OmniOmniencModel(checkpoint=str(root), progress=False)
    e = mstar_harness.build_engines(model, device, dtype, {"autocast_dtype": dtype})
    out: dict = {"omnienc_create_s": e.create_s, "load_report": model.load_reports[device], "omnienc": e.omnienc,
                 "stock_create_s": e.stock_create_s, "model": model}
    stock_nodes = e.stock_nodes
    hf_modules = {n: getattr(m, "vision_encoder", None) or getattr(m, "audio_encoder") for n, m in stock_nodes.items()}
    out["stock_attention"] = {n: m.config._attn_implementation for n, m in hf_modules.items()}
    compiled = Engine(autocast_dtype=dtype)
    compiled.load_model(stock_nodes, [], e.groups, device, e.transfer)
    compiled.warmup()  # M*'s warm-up: no engine graphs for these nodes, then _compile_submodules
    out["stock_eager"], out["stock_compiled"] = e.stock, compiled
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="out/mstar")
    p.add_argument("--sizes", choices=("real", "tiny"), default="real")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--workloads", default="image448,audio10s,mixed32")
    p.add_argument("--repeats", type=int, default=20, help="timed runs per (engine, workload); mixed32 takes a quarter")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs first (the compiled engine compiles here)")
    p.add_argument("--budget-s", type=float, default=170.0,
                   help="skip the compiled stock column of workloads not started within this many seconds")
    args = p.parse_args(argv)
    t_start = time.perf_counter()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32

    om = mstar_harness.load()
    log(f"M* imported (stood in: {mstar_harness.STOOD_IN or 'nothing'})")
    vcfg, acfg = configs(args.sizes)
    tmp = tempfile.TemporaryDirectory(prefix="qwen3_omni_random_")
    root = Path(tmp.name)
    t0 = time.perf_counter()
    hf_vision, hf_audio = mstar_harness.write_checkpoint(root, vcfg, acfg, dtype=dtype, device=device)
    log(f"checkpoint written in {time.perf_counter() - t0:.1f} s: {root}")

    engines = load_engines(om, root, device, dtype)
    report = engines["load_report"]
    log(f"omnienc nodes created in {engines['omnienc_create_s']:.1f} s (capture {report['capture_s']:.1f} s, "
        f"{report['graphs']} graphs); stock nodes in {engines['stock_create_s']:.1f} s, attention "
        f"{engines['stock_attention']}")

    results: dict = {
        "card": torch.cuda.get_device_name(device) if cuda else "cpu",
        "torch": torch.__version__, "transformers": __import__("transformers").__version__,
        "mstar": _version("mstar-ai"), "commit": _commit(), "date": time.strftime("%Y-%m-%d"),
        "sizes": args.sizes, "dtype": str(dtype).removeprefix("torch."), "stood_in": list(mstar_harness.STOOD_IN),
        "omnienc_create_s": engines["omnienc_create_s"], "stock_create_s": engines["stock_create_s"],
        "stock_attention": engines["stock_attention"], "load_report": report, "workloads": {},
    }
    all_workloads = workloads(vcfg)
    runtime = engines["omnienc"]._submodules["vision_encoder"].submodule.runtime
    torch.manual_seed(0)
    for name in args.workloads.split(","):
        inputs = make_inputs(all_workloads[name], vcfg, acfg, device)
        repeats = max(1, args.repeats // 4) if name == "mixed32" else args.repeats
        row: dict = {"requests": len(all_workloads[name]), "columns": {}}
        outs = {}
        for col in COLUMNS:
            if col == "stock_compiled" and (not cuda or time.perf_counter() - t_start > args.budget_s):
                row["columns"][col] = {"skipped": "no CUDA (M* compiles only there)" if not cuda else "time budget"}
                continue
            engine = engines[col]
            exact = runtime.exact_graphs
            if col == "omnienc" and name == "mixed32":
                runtime.exact_graphs = False  # a mix does not come back in serving
            try:
                t0 = time.perf_counter()
                outs[col] = run_workload(engine, inputs)
                first_ms = (time.perf_counter() - t0) * 1e3
                timing = time_workload(engine, inputs, max(args.warmup - 1, 0), repeats, cuda)
            finally:
                runtime.exact_graphs = exact
            timing["first_ms"] = first_ms
            row["columns"][col] = timing
            log(f"{name} {col}: {timing['wall_ms']:.2f} ms wall (first call {first_ms:.0f} ms)")
        faster = min((row["columns"][c]["wall_ms"] for c in ("stock_eager", "stock_compiled")
                      if "wall_ms" in row["columns"][c]), default=None)
        row["speedup_vs_faster_stock"] = faster / row["columns"]["omnienc"]["wall_ms"] if faster else None
        row["target_speedup"] = TARGET_SPEEDUP.get(name)
        row["accuracy"] = accuracy(outs, reference(hf_vision, hf_audio, inputs))
        results["workloads"][name] = row
        del outs, inputs
        if cuda:
            torch.cuda.empty_cache()
        results["total_s"] = time.perf_counter() - t_start
        write(results, out_dir)  # after every workload: a run cut short keeps what it measured
    results["runtime_stats"] = {k: v for k, v in runtime.stats().items() if k not in ("vision", "audio")}
    print(write(results, out_dir))
    tmp.cleanup()
    return 0


def write(results: dict, out_dir: Path) -> str:
    (out_dir / "mstar_nodes.json").write_text(json.dumps(results, indent=1, default=str))
    table = render(results)
    (out_dir / "mstar_nodes.md").write_text(table)
    return table


def render(r: dict) -> str:
    rep = r["load_report"]
    gib = 2**-30
    lines = [
        f"M* encoder nodes, stock vs omnienc ({r['card']}, {r['date']}, commit {r['commit']}, torch {r['torch']}, "
        f"transformers {r['transformers']}, mstar-ai {r['mstar']}, {r['sizes']} sizes, {r['dtype']}; stock attention "
        f"{r['stock_attention']})",
        "",
        "| workload | stock eager ms | stock compiled ms | omnienc ms | speedup vs faster stock (target) | accuracy |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, row in r["workloads"].items():
        cols = [row["columns"][c].get("wall_ms") for c in COLUMNS]
        cells = [f"{v:.2f}" if v is not None else row["columns"][c].get("skipped", "-") for v, c in zip(cols, COLUMNS)]
        sp = row["speedup_vs_faster_stock"]
        acc = row["accuracy"]
        worst = max((o["worst_ratio"] for o in acc["outputs"].values()), default=0.0)
        mincos = min((o["min_cosine"] for o in acc["outputs"].values()), default=1.0)
        speedup = f"{sp:.2f}x ({row['target_speedup']}x)" if sp else "-"
        lines.append(f"| {name} ({row['requests']} req) | {cells[0]} | {cells[1]} | {cells[2]} | {speedup} | "
                     f"{'pass' if acc['ok'] else 'FAIL'}: err <= {worst:.2f}x stock's, cos >= {mincos:.5f} |")
    lines += [
        "",
        f"Node creation: omnienc {r['omnienc_create_s']:.1f} s for both nodes (weights from disk, runtime, capture "
        f"{rep['capture_s']:.1f} s, {rep['graphs']} graphs; target <= {TARGET_CREATE_S:.0f} s); "
        f"stock {r['stock_create_s']:.1f} s.",
        f"GPU memory held by omnienc: weights {rep['weights_bytes'] * gib:.2f} GiB, static buffers "
        f"{rep['static_buffers_bytes'] * gib:.2f} GiB, allocated by capture {rep['capture_allocated_bytes'] * gib:.2f} GiB "
        f"(graph pools reserve {', '.join(f'{m} {b * gib:.2f} GiB' for m, b in rep['graph_memory_bytes'].items())}); "
        f"memory_allocated +{rep['allocated_bytes'] * gib:.2f} GiB, "
        f"memory_reserved +{rep['reserved_bytes'] * gib:.2f} GiB.",
        "Wall-clock medians of M*'s step (prepare_inputs .. check_stop, device waited for); "
        f"total run {r['total_s']:.0f} s.",
    ]
    return "\n".join(lines) + "\n"


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=HERE, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


if __name__ == "__main__":
    sys.exit(main())
