"""Attention kernels at the encoders' real shapes, A/B'd on the GPU (``python benchmarks/attn_bench.py``).

Both encoders spend their attention in many short, independent segments packed on one token axis
(vision: one per frame, 16 heads of 72; audio: windows of 104 tokens, 20 heads of 64). This measures
each candidate kernel on exactly those layouts, captured in a CUDA graph the way the runtime uses it:

    fa2_varlen      ``torch.nn.attention.varlen.varlen_attn`` (FlashAttention-2 varlen): what the runtime uses
    cudnn           ``torch.ops.cudnn.sdpa_fwd`` on the packed layout with ``cu_seqlens`` (the ``cudnn``
                    attention backend; only if ``nvidia-cudnn-frontend`` imports)
    cudnn_ragged    ``aten._cudnn_attention_forward`` with ``cu_seqlens`` (cuDNN's ragged layout)
    cudnn_batched   SDPA pinned to cuDNN on ``[B, H, S, D]``: only when every segment has one length
    flash_batched   SDPA pinned to FlashAttention on ``[B, H, S, D]``: same condition
    flashinfer      FlashInfer's ragged prefill (only if ``flashinfer`` imports); vision's head_dim 72
                    zero-padded to 128, the padding and the slice back timed with it

Every kernel's output is checked against a per-segment fp32 SDPA reference (max abs error); a kernel
that raises, cannot be captured, or is wrong is reported as such, not timed. Writes a markdown table
and JSON (``--out``). Timing: ``--inner`` calls per graph, the graph replayed ``--repeats`` times,
median per call.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Case:
    name: str
    heads: int
    head_dim: int
    seqlens: tuple[int, ...]


def _audio_windows(tokens: int, window: int = 104) -> list[int]:
    return [window] * (tokens // window) + ([tokens % window] if tokens % window else [])


def _pad_segments(n: int, seg: int = 256) -> list[int]:
    return [seg] * (n // seg) + ([n % seg] if n % seg else [])


CASES = (
    Case("vision 224 (1x196)", 16, 72, (196,)),
    Case("vision 448 (1x784)", 16, 72, (784,)),
    Case("vision 720p (1x3680) in 4320 bucket", 16, 72, (3680, *_pad_segments(640))),
    Case("vision 8x448 (8x784)", 16, 72, (784,) * 8),
    Case("vision 8x448 in 6400 bucket", 16, 72, (784,) * 8 + (128,)),
    Case("vision 2x448 in 2356 bucket", 16, 72, (784, 784, *_pad_segments(788))),
    Case("audio 10s (130 tok)", 20, 64, tuple(_audio_windows(130))),
    Case("audio 30s (390 tok)", 20, 64, tuple(_audio_windows(390))),
    Case("audio 8x10s (8x130 tok)", 20, 64, tuple(_audio_windows(130)) * 8),
)


def _reference(q, k, v, seqlens):
    out = torch.empty_like(q, dtype=torch.float32)
    start = 0
    for n in seqlens:
        s = slice(start, start + n)
        out[s] = F.scaled_dot_product_attention(
            q[s].float().transpose(0, 1), k[s].float().transpose(0, 1), v[s].float().transpose(0, 1)
        ).transpose(0, 1)
        start += n
    return out


def _kernel(name: str, case: Case, cu: torch.Tensor, max_len: int):
    """Kernel ``name`` for this case: a callable(q, k, v) -> [T, H, D], or a string saying why it
    does not apply. Only the named kernel is built (FlashInfer's wrapper allocates and plans)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.attention.varlen import varlen_attn

    if name == "fa2_varlen":
        return lambda q, k, v: varlen_attn(q, k, v, cu, cu, max_len, max_len)
    if name == "cudnn":
        from omnienc.encoders.attention import cudnn_available, varlen_attention

        if not cudnn_available():
            return "nvidia-cudnn-frontend not importable"
        return lambda q, k, v: varlen_attention(q, k, v, cu, max_len, None, "cudnn")
    if name == "cudnn_ragged":
        return lambda q, k, v: torch.ops.aten._cudnn_attention_forward(
            q, k, v, None, cu, cu, max_len, max_len, False
        )[0]
    if name == "flashinfer":
        return _flashinfer_kernel(case, cu)
    if len(set(case.seqlens)) != 1:
        return "segments differ in length"
    backend = {"cudnn_batched": SDPBackend.CUDNN_ATTENTION, "flash_batched": SDPBackend.FLASH_ATTENTION}[name]
    b, s = len(case.seqlens), case.seqlens[0]

    def four(x):
        return x.view(b, s, case.heads, case.head_dim).transpose(1, 2)

    def run(q, k, v):
        with sdpa_kernel(backend):
            o = F.scaled_dot_product_attention(four(q), four(k), four(v))
        return o.transpose(1, 2).reshape(q.shape)

    return run


def _flashinfer_kernel(case: Case, cu: torch.Tensor):
    try:
        import flashinfer
    except Exception as e:  # noqa: BLE001 - optional backend; say why it is absent
        return f"flashinfer not importable ({type(e).__name__})"
    dim = case.head_dim if case.head_dim in (64, 128, 256) else 128
    ws = torch.empty(128 * 2**20, dtype=torch.uint8, device=cu.device)
    wrapper = flashinfer.BatchPrefillWithRaggedKVCacheWrapper(
        ws, "NHD", use_cuda_graph=True, qo_indptr_buf=cu.clone(), kv_indptr_buf=cu.clone()
    )
    t0 = time.perf_counter()
    wrapper.plan(cu, cu, case.heads, case.heads, dim, causal=False, sm_scale=case.head_dim**-0.5,
                 q_data_type=torch.bfloat16)
    plan_ms = (time.perf_counter() - t0) * 1e3

    def run(q, k, v):
        if dim != case.head_dim:
            pad = (0, dim - case.head_dim)
            return wrapper.run(F.pad(q, pad), F.pad(k, pad), F.pad(v, pad))[..., : case.head_dim]
        return wrapper.run(q, k, v)

    run.plan_ms = plan_ms  # host cost of one plan (paid per replay when the segments change)
    run.padded_dim = dim
    return run


def _time_graph(fn, args, inner: int, repeats: int) -> float:
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn(*args)
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(inner):
            fn(*args)
    g.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / inner)
    return statistics.median(times)


def _inputs(case: Case, device: torch.device):
    total = sum(case.seqlens)
    cu = torch.tensor([0, *torch.tensor(case.seqlens).cumsum(0).tolist()], dtype=torch.int32, device=device)
    q, k, v = (torch.randn(total, case.heads, case.head_dim, device=device, dtype=torch.bfloat16) for _ in range(3))
    return cu, (q, k, v), _reference(q, k, v, case.seqlens)


def _time_eager(fn, args, inner: int, repeats: int) -> float:
    for _ in range(3):
        fn(*args)
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(inner):
            fn(*args)
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / inner)
    return statistics.median(times)


def run_kernel(case: Case, name: str, fn, data, inner: int, repeats: int, capture: bool) -> dict:
    """One kernel on one case: checked, then timed in a CUDA graph (or eagerly if ``capture`` is
    False). A failed capture is reported as ``capture_error`` and the kernel timed eagerly."""
    cu, qkv, ref = data
    flops = sum(4 * n * n * case.head_dim * case.heads for n in case.seqlens)
    if isinstance(fn, str):
        return {"skipped": fn}
    try:
        t0 = time.perf_counter()
        out = fn(*qkv)
        torch.cuda.synchronize()
        res = {"max_abs_err": (out.float() - ref).abs().max().item(), "first_call_s": round(time.perf_counter() - t0, 3)}
    except Exception as e:  # noqa: BLE001 - a failing kernel is a result
        return {"error": f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}"}
    if hasattr(fn, "plan_ms"):
        res["plan_ms"] = round(fn.plan_ms, 3)
        res["padded_head_dim"] = fn.padded_dim
    if not math.isfinite(res["max_abs_err"]) or res["max_abs_err"] > 2e-2:
        res["wrong"] = True
        return res
    if capture:
        try:
            res["ms"] = _time_graph(fn, qkv, inner, repeats)
            res["timed"] = "graph"
        except Exception as e:  # noqa: BLE001
            res["capture_error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200]}"
            torch.cuda.synchronize()
    if "ms" not in res:  # not capturable: a few eager calls suffice to say what it costs
        res["ms"] = _time_eager(fn, qkv, 1 if capture else inner, 3 if capture else repeats)
        res["timed"] = "eager"
    res["tflops"] = flops / res["ms"] / 1e9
    return res


KERNELS = ("fa2_varlen", "cudnn", "cudnn_batched", "flash_batched", "flashinfer", "cudnn_ragged")


def run_all(inner: int, repeats: int, device: torch.device, kernels=KERNELS) -> list[dict]:
    """Every kernel on every case. Inputs are drawn first, and cuDNN's ragged path runs last: a
    failed capture leaves the CUDA generator unusable, so nothing may depend on it afterwards."""
    data = [_inputs(c, device) for c in CASES]
    rows = [{"case": c.name, "tokens": sum(c.seqlens), "segments": len(c.seqlens), "results": {}} for c in CASES]
    order = [k for k in KERNELS if k in kernels]  # cudnn_ragged last (see above)
    capture_ragged = True
    for name in order:
        for case, d, row in zip(CASES, data, rows):
            fn = _kernel(name, case, d[0], max(case.seqlens))
            res = run_kernel(case, name, fn, d, inner, repeats, capture=name != "cudnn_ragged" or capture_ragged)
            if "capture_error" in res:
                capture_ragged = False
            row["results"][name] = res
            shown = f"{res['ms'] * 1e3:.1f}us ({res['timed']})" if "ms" in res else json.dumps(res)
            print(f"{case.name} / {name}: {shown}" + (f"  capture: {res['capture_error']}" if "capture_error" in res else ""),
                  flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    names = list(rows[0]["results"])
    head = "| case | tokens | " + " | ".join(names) + " |\n|---|---:|" + "---:|" * len(names) + "\n"
    lines = []
    for r in rows:
        cells = []
        for n in names:
            x = r["results"][n]
            if "ms" in x:
                eager = "" if x["timed"] == "graph" else ", eager: not capturable"
                cells.append(f"{x['ms'] * 1e3:.1f} us ({x['tflops']:.0f} TF/s{eager})")
            elif "wrong" in x:
                cells.append(f"WRONG (err {x['max_abs_err']:.2g})")
            elif "error" in x:
                cells.append("error")
            else:
                cells.append("n/a")
        lines.append(f"| {r['case']} | {r['tokens']} | " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--inner", type=int, default=20, help="calls per captured graph")
    p.add_argument("--repeats", type=int, default=30, help="graph replays timed")
    p.add_argument("--kernels", default=",".join(KERNELS), help="comma list (default: all, as above)")
    p.add_argument("--out", type=Path, default=None, help="folder for attn_bench.md / attn_bench.json")
    args = p.parse_args(argv)
    device = torch.device("cuda")
    kernels = args.kernels.split(",")
    if set(kernels) - set(KERNELS):
        p.error(f"unknown kernels {sorted(set(kernels) - set(KERNELS))}; choose from {', '.join(KERNELS)}")
    if not torch.cuda.is_available():
        p.error("needs a CUDA GPU")
    rows = run_all(args.inner, args.repeats, device, kernels)
    props = torch.cuda.get_device_properties(device)
    text = (f"attention kernels on {props.name}, torch {torch.__version__}, bf16, "
            f"{time.strftime('%Y-%m-%d')}; per call, median of {args.repeats} graph replays x {args.inner}\n\n"
            + markdown(rows))
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "attn_bench.md").write_text(text)
        (args.out / "attn_bench.json").write_text(json.dumps({"card": props.name, "torch": torch.__version__,
                                                               "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
