"""The fused ops against the unfused PyTorch sequences they replace, at the encoders' real shapes
(``python benchmarks/kernel_bench.py --out DIR``; CUDA, bf16).

Shapes: vision T = 784, 3136, 6272 tokens x hidden 1152 (MLP 4304, tanh-GELU, LN eps 1e-6); audio
L = 130, 1040 tokens x d_model 1280 (FFN 5120, exact GELU, LN eps 1e-5); the audio conv front-end at
10 and 80 chunks of [128 mel, 100 frames] (one and eight 10 s clips), 480 channels; the runtime's
output row flags at the vision encoder's 4 x [196, 2048] (one 448x448 image) and the audio
encoder's [130, 2048] and [1040, 2048] (one and eight 10 s clips).

Per shape, three groups:
    ``add+LN``        the op alone: ``x + y; F.layer_norm`` vs ``add_layernorm`` (bias kept in the GEMM,
                      ``bias=None``), and the same with a bias folded in (``x + (y + b)``).
    ``proj+add+LN``   with the attention output projection in front: today's
                      ``x + F.linear(a, W, b)`` then the norm, vs ``add_layernorm(x, F.linear(a, W, b))``,
                      vs ``add_layernorm(x, F.linear(a, W), b)`` (bias folded into the kernel).
    ``fc1+GELU``      ``linear_gelu`` impls ``torch`` / ``epilogue`` (tanh only) / ``triton``, and the
                      elementwise part alone: ``F.gelu(y + b)`` vs ``bias_gelu`` (and ``F.gelu(y)``,
                      the pass today's code pays after the GEMM).

Per front-end shape (``ops.audio_front``; the reference is the encoder's ``fusion.front="torch"``):
    ``front``         the three convolutions with their epilogues as the encoder runs them.
    ``conv1+GELU+mask``  ``F.unfold`` + ``F.linear`` (K = 9), GELU, mask vs ``conv1_gelu_mask``.
    ``conv2 epilogue``, ``conv3 epilogue + flatten``  on an unbiased conv output: ``gelu(y + b) *
                      keep`` (+ the permute/reshape copy) vs ``bias_gelu_mask``, and the passes
                      today's code pays after a biased convolution (``gelu(y) * keep``).

Per row-flags shape (``ops.finite``; the reference is ``row_flags_torch``, today's per-output
``isfinite(o).all(-1)`` and ``&=``; a few NaN and inf planted so the flags compared are not all True):
    ``row flags``     of the outputs as the encoder returns them vs ``row_flags`` over them (one
                      launch) vs ``row_flags`` over them stacked (what the lane's captured forward reads).
    ``stack + flags`` the captured forward's tail: ``torch.stack`` then the reference's flags of the
                      outputs vs ``torch.stack`` then ``row_flags`` of the stacked tensor.

Every variant is checked against its group's first (the unfused reference) before it is timed (max
abs error, reported); timing captures ``--inner`` calls in a CUDA graph and replays it ``--repeats``
times with CUDA events, median per call. Memory-bound rows report effective bandwidth: the op's
minimal bytes (inputs read once, outputs written once) over the time, and its share of the card's
peak (``--peak-gbs``, default the H200's 4800 GB/s); GEMM rows report TFLOP/s. Markdown to stdout,
``kernel_bench.md`` and ``kernel_bench.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from omnienc.encoders.audio import conv_lens
from omnienc.encoders.ops import (
    add_layernorm,
    audio_front,
    bias_gelu,
    bias_gelu_mask,
    conv1_gelu_mask,
    gelu_mask,
    linear_gelu,
    row_flags,
    row_flags_torch,
)
from attn_bench import _time_graph


@dataclass(frozen=True)
class Shape:
    name: str
    tokens: int
    hidden: int
    mlp: int
    approximate: str  # GELU
    eps: float


SHAPES = (
    Shape("vision 784", 784, 1152, 4304, "tanh", 1e-6),
    Shape("vision 3136", 3136, 1152, 4304, "tanh", 1e-6),
    Shape("vision 6272", 6272, 1152, 4304, "tanh", 1e-6),
    Shape("audio 130", 130, 1280, 5120, "none", 1e-5),
    Shape("audio 1040", 1040, 1280, 5120, "none", 1e-5),
)


@dataclass(frozen=True)
class FrontShape:
    name: str
    chunks: int
    mel: int = 128
    frames: int = 100
    channels: int = 480

    @property
    def tokens(self) -> int:
        return self.chunks * conv_lens(self.frames)[2]


FRONT_SHAPES = (FrontShape("audio front 10 chunks", 10), FrontShape("audio front 80 chunks", 80))


@dataclass(frozen=True)
class FlagShape:
    name: str
    outputs: int  # tensors per run
    rows: int
    width: int = 2048

    @property
    def tokens(self) -> int:
        return self.rows


FLAG_SHAPES = (FlagShape("vision flags 1 image", 4, 196), FlagShape("audio flags 1 clip", 1, 130),
               FlagShape("audio flags 8 clips", 1, 1040))


@dataclass
class Variant:
    name: str
    fn: object  # callable(*args)
    bytes: int = 0  # minimal bytes moved (memory-bound rows)
    flops: int = 0  # GEMM rows
    check: bool = True  # compared with the group's reference (False: a different function, timed only)


def _groups(s: Shape, device, impl: str = "triton") -> list[tuple[str, tuple, list[Variant]]]:
    """(group, args, variants) for one shape; the first variant of a group is its reference.
    ``impl`` is the fused ops' (``torch`` lets the CPU tests check the wiring)."""
    bf = dict(device=device, dtype=torch.bfloat16)
    T, N, M = s.tokens, s.hidden, s.mlp
    x, y, a = (torch.randn(T, N, **bf) for _ in range(3))
    ln_w, ln_b, b = torch.randn(N, **bf) * 0.3 + 1, torch.randn(N, **bf) * 0.3, torch.randn(N, **bf) * 0.3
    w_proj = torch.randn(N, N, **bf) * N**-0.5
    h = torch.randn(T, N, **bf)
    w1, b1 = torch.randn(M, N, **bf) * N**-0.5, torch.randn(M, **bf) * 0.3
    z = torch.randn(T, M, **bf)
    e, ax = s.eps, s.approximate
    el = 2  # bytes per bf16 element
    ln_bytes = (4 * T * N + 2 * N) * el

    def unfused_ln(x, y, bias):
        x = x + (y if bias is None else y + bias)
        return x, F.layer_norm(x, (N,), ln_w, ln_b, e)

    groups = [
        ("add+LN", (x, y), [
            Variant("x + y; layer_norm", lambda x, y: unfused_ln(x, y, None), ln_bytes),
            Variant("add_layernorm", lambda x, y: add_layernorm(x, y, None, ln_w, ln_b, e, impl=impl), ln_bytes),
        ]),
        ("add+LN, bias folded", (x, y), [
            Variant("x + (y + b); layer_norm", lambda x, y: unfused_ln(x, y, b), ln_bytes + N * el),
            Variant("add_layernorm(bias=b)", lambda x, y: add_layernorm(x, y, b, ln_w, ln_b, e, impl=impl),
                    ln_bytes + N * el),
        ]),
        ("proj+add+LN", (x, a), [
            Variant("x + linear(a, W, b); layer_norm", lambda x, a: unfused_ln(x, F.linear(a, w_proj, b), None),
                    flops=2 * T * N * N),
            Variant("add_layernorm(x, linear(a, W, b))",
                    lambda x, a: add_layernorm(x, F.linear(a, w_proj, b), None, ln_w, ln_b, e, impl=impl),
                    flops=2 * T * N * N),
            Variant("add_layernorm(x, linear(a, W), b)",
                    lambda x, a: add_layernorm(x, F.linear(a, w_proj), b, ln_w, ln_b, e, impl=impl),
                    flops=2 * T * N * N),
        ]),
        (f"fc1+GELU ({ax})", (h,), [
            Variant("gelu(linear(h, W1, b1))", lambda h: linear_gelu(h, w1, b1, ax, impl="torch"), flops=2 * T * N * M),
            *([Variant("linear_gelu epilogue", lambda h: linear_gelu(h, w1, b1, ax, impl="epilogue"),
                       flops=2 * T * N * M)] if ax == "tanh" else []),
            Variant("linear_gelu triton", lambda h: linear_gelu(h, w1, b1, ax, impl=impl), flops=2 * T * N * M),
        ]),
        (f"bias+GELU ({ax})", (z,), [
            Variant("gelu(z + b1)", lambda z: F.gelu(z + b1, approximate=ax), (2 * T * M + M) * el),
            Variant("bias_gelu", lambda z: bias_gelu(z, b1, ax, impl=impl), (2 * T * M + M) * el),
            Variant("gelu(z) (today's pass)", lambda z: F.gelu(z, approximate=ax), 2 * T * M * el, check=False),
        ]),
    ]
    return groups


def _front_groups(s: FrontShape, device, impl: str = "triton") -> list[tuple[str, tuple, list[Variant]]]:
    """(group, args, variants) for one front-end shape, as ``_groups``; every chunk of full length
    (the mask costs the same whatever it keeps)."""
    bf = {"device": device, "dtype": torch.bfloat16}
    C, ch, el = s.chunks, s.channels, 2
    chunks = torch.randn(C, s.mel, s.frames, **bf)
    w1 = torch.randn(ch, 1, 3, 3, **bf) / 3
    w2, w3 = (torch.randn(ch, ch, 3, 3, **bf).div(3 * ch**0.5).contiguous(memory_format=torch.channels_last)
              for _ in range(2))
    b1, b2, b3 = (torch.randn(ch, **bf) * 0.3 for _ in range(3))
    convs = [(w1, b1), (w2, b2), (w3, b3)]
    w1cl = w1.contiguous(memory_format=torch.channels_last)
    valid = torch.tensor(conv_lens(s.frames), device=device).repeat(C, 1)  # [C, 3]
    f1, f2, f3 = conv_lens(s.mel)
    t1, t2, t3 = conv_lens(s.frames)
    y2 = F.conv2d(conv1_gelu_mask(chunks, w1, b1, valid[:, 0], impl="torch"), w2, None, 2, 1)  # [C, ch, f2, t2]
    y3 = F.conv2d(gelu_mask(y2 + b2[:, None, None], valid[:, 1]), w3, None, 2, 1)  # [C, ch, f3, t3]
    flops = 2 * 9 * C * ch * (f1 * t1 + ch * (f2 * t2 + f3 * t3))
    n1, n2, n3 = C * ch * f1 * t1, C * ch * f2 * t2, C * ch * f3 * t3
    return [
        ("front", (chunks,), [
            Variant("unfold+linear, conv2d x2; gelu, mask, flatten", lambda x: audio_front(x, convs, valid, "torch"),
                    flops=flops),
            Variant("audio_front", lambda x: audio_front(x, convs, valid, impl), flops=flops),
        ]),
        ("conv1+GELU+mask", (chunks,), [
            Variant("unfold + linear; gelu; mask", lambda x: conv1_gelu_mask(x, w1, b1, valid[:, 0], "torch"),
                    (chunks.numel() + n1) * el),
            Variant("conv1_gelu_mask", lambda x: conv1_gelu_mask(x, w1, b1, valid[:, 0], impl),
                    (chunks.numel() + n1) * el),
            Variant("cuDNN conv2d (1 channel in); bias_gelu_mask",
                    lambda x: bias_gelu_mask(F.conv2d(x[:, None], w1cl, None, 2, 1), b1, valid[:, 0], impl=impl),
                    (chunks.numel() + n1) * el),
        ]),
        ("conv2 epilogue", (y2,), [
            Variant("gelu(y + b) * keep", lambda y: bias_gelu_mask(y, b2, valid[:, 1], impl="torch"), 2 * n2 * el),
            Variant("bias_gelu_mask", lambda y: bias_gelu_mask(y, b2, valid[:, 1], impl=impl), 2 * n2 * el),
            Variant("gelu(y) * keep (today's passes)", lambda y: gelu_mask(y, valid[:, 1]), 2 * n2 * el,
                    check=False),
        ]),
        ("conv3 epilogue + flatten", (y3,), [
            Variant("gelu(y + b) * keep; flatten", lambda y: bias_gelu_mask(y, b3, valid[:, 2], True, "torch"),
                    2 * n3 * el),
            Variant("bias_gelu_mask(flatten)", lambda y: bias_gelu_mask(y, b3, valid[:, 2], True, impl),
                    2 * n3 * el),
            Variant("gelu(y) * keep; flatten (today's passes)", lambda y: gelu_mask(y, valid[:, 2], True),
                    2 * n3 * el, check=False),
        ]),
    ]


def _flag_groups(s: FlagShape, device, impl: str = "triton") -> list[tuple[str, tuple, list[Variant]]]:
    """(group, args, variants) for one row-flags shape, as ``_groups``: bf16 outputs with a NaN,
    a +inf and a -inf planted in rows of different outputs (the last one where there are several)."""
    outs = [torch.randn(s.rows, s.width, device=device, dtype=torch.bfloat16) for _ in range(s.outputs)]
    for k, (row, value) in enumerate([(0, float("nan")), (s.rows // 2, float("inf")), (s.rows - 1, float("-inf"))]):
        outs[k % s.outputs][row, (k * 977) % s.width] = value
    stacked = torch.stack(outs)
    nbytes = stacked.numel() * stacked.element_size()
    read = nbytes + s.rows  # the outputs read once, the bool flags written once

    def stack_then_flags(of_stacked: bool):
        """The stack, then the flags; only the flags are returned and compared (the stacked copy
        holds the planted NaN, which would make any error NaN)."""
        def fn(*o):
            st = torch.stack(o)
            return row_flags(st, impl=impl) if of_stacked else row_flags_torch(o)
        return fn

    return [
        ("row flags", tuple(outs), [
            Variant("isfinite(o).all(-1) &= ... (per output)", lambda *o: row_flags_torch(o), read),
            Variant("row_flags (outputs)", lambda *o: row_flags(o, impl=impl), read),
            Variant("row_flags (stacked)", lambda *o: row_flags(stacked, impl=impl), read),
        ]),
        ("stack + flags", tuple(outs), [
            Variant("stack; flags of the outputs (torch)", stack_then_flags(False), read + nbytes),
            Variant("stack; row_flags(stacked)", stack_then_flags(True), read + nbytes),
        ]),
    ]


def _cases(device):
    """(shape name, tokens, groups builder) of every shape: the blocks', the front-end's, the row
    flags'."""
    for s in SHAPES:
        yield s.name, s.tokens, lambda s=s: _groups(s, device)
    for s in FRONT_SHAPES:
        yield s.name, s.tokens, lambda s=s: _front_groups(s, device)
    for s in FLAG_SHAPES:
        yield s.name, s.tokens, lambda s=s: _flag_groups(s, device)


def _max_err(out, ref) -> float:
    outs = out if isinstance(out, tuple) else (out,)
    refs = ref if isinstance(ref, tuple) else (ref,)
    return max((o.float() - r.float()).abs().max().item() for o, r in zip(outs, refs))


def run_all(inner: int, repeats: int, peak_gbs: float, device) -> list[dict]:
    rows = []
    for name, tokens, groups in _cases(device):
        torch.manual_seed(0)
        for group, args, variants in groups():
            ref = variants[0].fn(*args)
            for v in variants:
                row = {"shape": name, "tokens": tokens, "group": group, "variant": v.name}
                try:
                    row["max_abs_err"] = _max_err(v.fn(*args), ref) if v.check else None
                    row["us"] = _time_graph(v.fn, args, inner, repeats) * 1e3
                except Exception as e:  # noqa: BLE001 - a failing variant is a result
                    first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
                    row["error"] = f"{type(e).__name__}: {first}"
                    torch.cuda.synchronize()
                if "us" in row and v.bytes:
                    row["gbs"] = v.bytes / row["us"] / 1e3
                    row["peak_share"] = row["gbs"] / peak_gbs
                if "us" in row and v.flops:
                    row["tflops"] = v.flops / row["us"] / 1e6
                rows.append(row)
                shown = f"{row['us']:.1f} us" if "us" in row else row["error"]
                print(f"{name} / {group} / {v.name}: {shown}", flush=True)
            del ref
        torch.cuda.empty_cache()
    return rows


def markdown(rows: list[dict]) -> str:
    out = ["| shape | group | variant | us | eff. GB/s (% peak) | TF/s | max abs err vs first |",
           "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        us = f"{r['us']:.1f}" if "us" in r else f"error: {r['error']}"
        gbs = f"{r['gbs']:.0f} ({100 * r['peak_share']:.0f}%)" if "gbs" in r else ""
        tf = f"{r['tflops']:.0f}" if "tflops" in r else ""
        err = "" if r.get("max_abs_err") is None else f"{r['max_abs_err']:.3g}"
        out.append(f"| {r['shape']} | {r['group']} | {r['variant']} | {us} | {gbs} | {tf} | {err} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--inner", type=int, default=10, help="calls per captured graph")
    p.add_argument("--repeats", type=int, default=30, help="graph replays timed")
    p.add_argument("--peak-gbs", type=float, default=4800.0, help="the card's peak memory bandwidth (H200: 4800)")
    p.add_argument("--out", type=Path, default=None, help="folder for kernel_bench.md / kernel_bench.json")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        p.error("needs a CUDA GPU")
    device = torch.device("cuda")
    t0 = time.perf_counter()
    rows = run_all(args.inner, args.repeats, args.peak_gbs, device)
    props = torch.cuda.get_device_properties(device)
    text = (f"fused ops vs unfused on {props.name}, torch {torch.__version__}, bf16, {time.strftime('%Y-%m-%d')}; "
            f"per call, median of {args.repeats} graph replays x {args.inner}; peak {args.peak_gbs:.0f} GB/s; "
            f"{time.perf_counter() - t0:.0f} s\n\n" + markdown(rows))
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "kernel_bench.md").write_text(text)
        (args.out / "kernel_bench.json").write_text(json.dumps(
            {"card": props.name, "torch": torch.__version__, "peak_gbs": args.peak_gbs, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
