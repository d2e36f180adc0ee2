"""The report of ``omnienc bench``: markdown table, bar chart and the files it writes.

``format_markdown(report)`` renders the JSON report ``run_bench`` returns; ``plot`` draws the PNG
(matplotlib, optional); ``write_outputs`` writes ``bench.md``, ``bench.json`` and ``bench.png``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _ms(r: dict | None) -> str:
    if not r:
        return "-"
    if "error" in r:
        return "error"
    m, lo, hi = r["median_ms"], r["p10_ms"], r["p90_ms"]
    digits = 2 if m < 10 else 1 if m < 1000 else 0
    return f"{m:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


def _input(e: dict) -> str:
    parts = []
    if e["vision_patches"]:
        parts.append(f"{e['vision_patches']} patches")
    if e["audio_frames"]:
        parts.append(f"{e['audio_frames']} frames ({e['audio_tokens']} tok)")
    return f"{e['requests']} req: " + ", ".join(parts)


def _replays(e: dict) -> str:
    s = e.get("runtime_stats")
    if not s:
        return "-"
    replays = sum(v["replays"] for v in s.values())
    eager = sum(v.get("eager_runs", 0) for v in s.values())
    merged = sum(v.get("eager_merges", 0) for v in s.values())  # calls that ran several eager packs
    fallbacks = sum(v["fallbacks"] for v in s.values())
    eager_text = f" +{eager} eager runs" + (f" ({merged} merged call{'s' * (merged != 1)})" if merged else "") if eager else ""
    return f"{replays}" + eager_text + (f" +{fallbacks} fallbacks" if fallbacks else "")


RAW_COLUMNS = ("raw_hf", "raw_cpu_runtime", "raw_gpu_runtime", "pre_cpu", "pre_gpu")


def raw_table(report: dict) -> list[str]:
    """Markdown lines of the raw workloads' table (none without raw workloads)."""
    raw = {n: e for n, e in report["workloads"].items() if e.get("raw")}
    if not raw:
        return []
    lines = ["", "Raw inputs in host memory to embeddings, ms per workload (median (p10-p90)):", "",
             "| workload | transformers CPU + HF per request | transformers CPU + runtime | GPU preprocessing + "
             "runtime | runtime (ready inputs) | GPU preprocessing + runtime / runtime | target | preprocessing: "
             "transformers CPU | preprocessing: omnienc GPU |",
             "|---|---:|---:|---:|---:|---:|---|---:|---:|"]
    for name, e in raw.items():
        r = e["results"]
        ratio = e.get("ratios", {}).get("raw_over_ready")
        t = e.get("raw_target")
        target = "-" if t is None else f"<= {t:.2f}x" + ("" if ratio is None else (" met" if ratio <= t else " missed"))
        lines.append(f"| {name} | {_ms(r.get('raw_hf'))} | {_ms(r.get('raw_cpu_runtime'))} | "
                     f"{_ms(r.get('raw_gpu_runtime'))} | {_ms(r.get('runtime'))} | "
                     f"{'-' if ratio is None else f'{ratio:.3f}x'} | {target} | {_ms(r.get('pre_cpu'))} | "
                     f"{_ms(r.get('pre_gpu'))} |")
    return lines


def format_markdown(report: dict) -> str:
    """The report as markdown: context lines, the table, the raw workloads' table, notes."""
    meta = report["meta"]
    cols = [c for c in report["columns"] if c not in RAW_COLUMNS]
    lines = ["# omnienc bench", ""]
    lines.append(f"- card: **{meta['card']}** ({meta['device']}); torch {meta['torch']}, "
                 f"transformers {meta['transformers']}; {meta['date']}")
    lines.append(f"- command: `{meta['command']}`")
    params = ", ".join(f"{k} {v:.1f} M params" for k, v in meta.get("params_m", {}).items())
    lines.append(f"- model: {meta['model']} ({params}), {meta['dtype']}, {meta['weights']}")
    par = meta.get("parity_rel_err", {})
    if par and "error" not in par:
        lines.append("- omnienc vs HF output, rel. L2 error on one request: "
                     + ", ".join(f"{k} {v:.2e}" for k, v in par.items()))
    cap = report.get("capture")
    if cap and "error" not in cap:
        lines.append(f"- runtime grid: {meta['grid']} ({cap['graphs']} graphs, lanes: {', '.join(cap['lanes'])}); "
                     f"capture {cap['capture_s']:.1f} s, graph memory {cap['graph_memory_bytes'] / 2**30:.2f} GiB")
    elif cap:
        lines.append(f"- runtime grid: {meta['grid']}: capture failed ({cap['error']})")
    budget = f"; slow cells fewer so a cell takes ~{meta['cell_budget_s']:g} s, at least 5" if meta["cell_budget_s"] else ""
    lines.append(f"- timing: ms per workload, median (p10-p90) over up to {meta['repeats']} calls after "
                 f"{meta['warmup']} warm-up{' (all of them)' if meta.get('full_warmup') else ''}{budget}")
    lines.append("")
    ratio_cols = []
    if "runtime" in cols and "hf_per_request" in cols:
        ratio_cols.append(("speedup_vs_hf_per_request", "runtime speed-up vs hf_per_request", "x"))
    if "runtime" in cols and "floor" in cols:
        ratio_cols.append(("runtime_over_floor", "runtime / floor", "x"))
    header = ["workload", "input"] + cols + [label for _, label, _ in ratio_cols]
    if "runtime" in cols:
        header += ["runtime replays", "runtime enqueue ms"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for name, e in report["workloads"].items():
        row = [name, _input(e)] + [_ms(e["results"].get(c)) for c in cols]
        for key, _, unit in ratio_cols:
            v = e.get("ratios", {}).get(key)
            row.append(f"{v:.1f}{unit}" if v is not None else "-")
        if "runtime" in cols:
            row.append(_replays(e))
            q = e.get("runtime_enqueue_ms")
            row.append(f"{q:.3f}" if q is not None else "-")
        lines.append("| " + " | ".join(row) + " |")
    lines += raw_table(report)
    lines += ["", "Notes:"]
    lines.append("- Inputs are random (`torch.randn`), made once per workload and already on the device; "
                 "host-to-device copies of pixel values / mel features are not timed. HF gets `grid_thw` / "
                 "`feature_lens` on the device (as the Thinker passes them); omnienc gets them on the host.")
    lines.append("- hf_per_request: one HF call per request; hf_batched and native_eager: one call per modality "
                 "with all requests concatenated (HF's batched audio output differs slightly from per-request: "
                 "it pads every chunk to the call's longest); runtime: `EncoderRuntime.encode(all requests)` "
                 "after capture, validation, packing, planning, copies into the graph buffers and output "
                 "slicing included.")
    lines.append("- floor: every Linear of the encoders at the workload's token counts (vision: patch embed, "
                 "qkv/proj/fc1/fc2 per block, 4 mergers at N/4 rows; audio: conv_out at 13 rows per chunk, "
                 "qkv (stacked)/out/fc1/fc2 per layer, proj1/proj2), bf16 random operands, one CUDA graph (on the CPU: "
                 "eager). Attention, norms, activations and the audio convolutions are not in it.")
    lines.append("- runtime enqueue ms: host time of `EncoderRuntime.launch(requests)` (validation, packing, "
                 "staging, enqueuing; median of 21) on an idle device, without waiting for the GPU.")
    if any(e.get("raw") for e in report["workloads"].values()):
        lines.append("- raw_* workloads: the same requests as their ready twin, as uint8 images / video frames "
                     "and float32 16 kHz waveforms in host memory, sized to preprocess to the same grids and "
                     "frame counts. Their `runtime` encodes those media preprocessed on the device (float32). "
                     "transformers CPU: `Qwen2VLImageProcessorPil` / `WhisperFeatureExtractor`, one call per "
                     "request; GPU preprocessing: `preprocess_requests` (all requests in one pass, host inputs "
                     "copied into one device buffer per dtype, see `omnienc.preprocess.staging`); a one-request "
                     "workload repeats its layout and so replays a preprocessing graph after the first calls, "
                     "a many-request one (a mix that never repeats in serving) runs kernel by kernel "
                     "(`graphs=False`).")
    lines.append("- CUDA timing: each call starts on an idle GPU and is bracketed by CUDA events. Only figures "
                 "of one run on one card compare.")
    service = report.get("service")
    if service and "meta" in service:
        from .service_load import format_markdown as service_markdown

        lines += ["", service_markdown(service, title=False).rstrip("\n")]
    if report["errors"]:
        lines += ["", "Errors:"] + [f"- {err}" for err in report["errors"]]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> bool:
    """Bar chart of median ms per workload per column (log scale); False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = list(report["workloads"])
    cols = [c for c in report["columns"] if c not in ("raw_cpu_runtime", "pre_cpu")]
    width = 0.8 / max(len(cols), 1)
    fig, ax = plt.subplots(figsize=(max(8, 1.3 * len(names)), 5))
    for i, c in enumerate(cols):
        xs, ys = [], []
        for j, n in enumerate(names):
            r = report["workloads"][n]["results"].get(c, {})
            if r.get("median_ms", 0) > 0:
                xs.append(j + (i - (len(cols) - 1) / 2) * width)
                ys.append(r["median_ms"])
        ax.bar(xs, ys, width, label=c)
    ax.set_yscale("log")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("ms per workload (median)")
    meta = report["meta"]
    ax.set_title(f"omnienc bench: {meta['card']}, torch {meta['torch']}, {meta['date'][:10]}", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_outputs(report: dict, out_dir: str | Path) -> dict[str, Path]:
    """Writes ``bench.md``, ``bench.json`` and (with matplotlib) ``bench.png``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "bench.md", "json": out / "bench.json"}
    paths["md"].write_text(format_markdown(report), encoding="utf-8")
    paths["json"].write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    try:
        if plot(report, out / "bench.png"):
            paths["png"] = out / "bench.png"
        else:
            print("omnienc bench: matplotlib is not installed; skipped bench.png", file=sys.stderr)
    except Exception as e:  # a plot must not lose the measurements
        print(f"omnienc bench: could not plot ({type(e).__name__}: {e}); skipped bench.png", file=sys.stderr)
    return paths


__all__ = ["RAW_COLUMNS", "format_markdown", "plot", "raw_table", "write_outputs"]
