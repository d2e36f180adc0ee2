"""GPU tests of the fused ops and the cuDNN attention backend (marked ``gpu``; skipped without CUDA).

Fused ops, bf16 at the encoders' real widths and odd row counts: the Triton kernels against their
PyTorch references (residual sum bit-identical, the rest within one rounding) and against float64
(error at most 1.5x the unfused sequence's), alone and composed into a block's second half;
captured in a CUDA graph and replayed on new inputs. The audio conv front-end at real sizes (80
chunks of [128 mel, 100 frames], 480 channels, some chunks cut): the fused path against float64, as
accurate as the unfused bf16 path, and captured and replayed with new chunks and lengths.
Output row flags at the encoders' output shapes, bf16 and float32, NaN and inf planted: the
kernel's flags exactly the reference's, over the outputs, stacked and strided; captured and replayed.
cuDNN attention (skipped without ``nvidia-cudnn-frontend``): per-segment float32 SDPA as the
reference at the vision (16 x 72) and audio (20 x 64) layouts the encoders pass, zero-length
segments included, error no worse than FlashAttention varlen's; capture, then replay with other
segment lengths of the same count and bound; ``fastest_backend`` on real graphs.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from fused_blocks import block_params, exact_block_out, fused_block_out, unfused_block_out

from omnienc.encoders.attention import available_backends, cudnn_available, fastest_backend, varlen_attention
from omnienc.encoders.audio import conv_lens
from omnienc.encoders.ops import (
    add_layernorm_torch,
    add_layernorm_triton,
    audio_front,
    bias_gelu_torch,
    bias_gelu_triton,
    linear_gelu,
    row_flags,
    row_flags_torch,
    row_flags_triton,
    triton_available,
)
from omnienc.cuda.graphs import capture

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")
BF16 = dict(device=CUDA, dtype=torch.bfloat16)
needs_triton = pytest.mark.skipif(not triton_available(), reason="triton is not importable")
needs_cudnn = pytest.mark.skipif(not cudnn_available(), reason="nvidia-cudnn-frontend is not installed")


def rel_err64(a: torch.Tensor, exact: torch.Tensor) -> float:
    return ((a.double() - exact).norm() / exact.norm()).item()


def assert_within_rounding(a: torch.Tensor, ref: torch.Tensor, atol: float = 1e-6) -> None:
    """|a - ref| <= one bf16 ulp at ref's magnitude, plus ``atol`` for results near 0."""
    tol = 2.0**-7 * ref.float().abs() + atol
    bad = (a.float() - ref.float()).abs() > tol
    assert not bad.any(), f"{int(bad.sum())} of {bad.numel()} values off by more than one rounding"


# ---- add_layernorm ----------------------------------------------------------------------------------

LN_SHAPES = [(784, 1152, 1e-6), (6272, 1152, 1e-6), (130, 1280, 1e-5), (1040, 1280, 1e-5),
             (1, 1152, 1e-6), (7, 1280, 1e-5), (785, 1152, 1e-6)]


def ln_inputs(rows, n, dtype=torch.bfloat16, scale=1.0):
    kw = dict(device=CUDA)
    x = (torch.randn(rows, n, **kw) * scale).clamp(-6e4, 6e4).to(dtype)
    y = (torch.randn(rows, n, **kw) * scale).clamp(-6e4, 6e4).to(dtype)
    bias, w, b = (torch.randn(n, **kw) * 0.3).to(dtype), (torch.randn(n, **kw) * 0.3 + 1).to(dtype), \
        (torch.randn(n, **kw) * 0.3).to(dtype)
    return x, y, bias, w, b


@needs_triton
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("rows,n,eps", LN_SHAPES)
def test_add_layernorm_bf16(rows, n, eps, with_bias):
    x, y, bias, w, b = ln_inputs(rows, n)
    bias = bias if with_bias else None
    x_new, h = add_layernorm_triton(x, y, bias, w, b, eps)
    ref_x, ref_h = add_layernorm_torch(x, y, bias, w, b, eps)
    assert torch.equal(x_new, ref_x)
    assert_within_rounding(h, ref_h)
    s = x.double() + y.double() + (bias.double() if with_bias else 0)
    exact = F.layer_norm(s, (n,), w.double(), b.double(), eps)
    assert rel_err64(h, exact) <= 1.5 * rel_err64(ref_h, exact) + 1e-12


@needs_triton
def test_add_layernorm_fp16_clamp():
    """The audio encoder's fp16 clamp folded in: overflowing sums end at the bound as Tensor.clamp
    leaves them."""
    bound = torch.finfo(torch.float16).max - 1000
    x, y, bias, w, b = ln_inputs(130, 1280, torch.float16, scale=3e4)
    x_new, h = add_layernorm_triton(x, y, bias, w, b, 1e-5, clamp=bound)
    ref_x, ref_h = add_layernorm_torch(x, y, bias, w, b, 1e-5, clamp=bound)
    assert torch.isinf(x + (y + bias)).any() and torch.equal(x_new, ref_x)
    assert torch.isfinite(h).all()
    torch.testing.assert_close(h, ref_h, rtol=2.0**-10, atol=1e-5)


# ---- bias + GELU ------------------------------------------------------------------------------------

GELU_SHAPES = [(784, 4304, "tanh"), (6272, 4304, "tanh"), (130, 5120, "none"), (1040, 5120, "none"),
               (1, 4304, "tanh"), (7, 5120, "none"), (785, 4304, "tanh"), (785, 5120, "none")]


@needs_triton
@pytest.mark.parametrize("rows,n,approximate", GELU_SHAPES)
def test_bias_gelu_bf16(rows, n, approximate):
    y = (torch.randn(rows, n, device=CUDA) * 3).to(torch.bfloat16)
    b = torch.randn(n, **BF16)
    out = bias_gelu_triton(y, b, approximate)
    ref = bias_gelu_torch(y, b, approximate)
    assert_within_rounding(out, ref)
    exact = F.gelu(y.double() + b.double(), approximate=approximate)
    assert rel_err64(out, exact) <= 1.5 * rel_err64(ref, exact) + 1e-12


@needs_triton
@pytest.mark.parametrize("rows,k,n,approximate", [(784, 1152, 4304, "tanh"), (1, 1152, 4304, "tanh"),
                                                  (130, 1280, 5120, "none"), (7, 1280, 5120, "none")])
def test_linear_gelu_impls_bf16(rows, k, n, approximate):
    x = torch.randn(rows, k, **BF16)
    w = (torch.randn(n, k, device=CUDA) * k**-0.5).to(torch.bfloat16)
    b = (torch.randn(n, device=CUDA) * 0.3).to(torch.bfloat16)
    exact = F.gelu(F.linear(x.double(), w.double(), b.double()), approximate=approximate)
    base = rel_err64(linear_gelu(x, w, b, approximate, impl="torch"), exact)
    impls = ["triton"] + (["epilogue"] if approximate == "tanh" else [])
    errs = {impl: rel_err64(linear_gelu(x, w, b, approximate, impl=impl), exact) for impl in impls}
    print(f"linear_gelu {rows}x{k}->{n} {approximate}: rel err torch {base:.3g}, "
          + ", ".join(f"{i} {e:.3g}" for i, e in errs.items()))
    for impl, err in errs.items():
        assert err <= 1.5 * base, impl


def test_addmm_gelu_epilogue_is_the_tanh_gelu():
    """cuBLASLt's GELU epilogue (``torch._addmm_activation``) in float32 with an identity weight, so
    the output is GELU of the input itself: closer to tanh-GELU than to exact GELU on average (the
    two differ by up to 5e-4 near |z| = 2.7; the epilogue may use a fast tanh of similar error)."""
    z = torch.linspace(-5, 5, 512 * 512, device=CUDA).view(512, 512)
    eye, zero = torch.eye(512, device=CUDA), torch.zeros(512, device=CUDA)
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        out = torch._addmm_activation(zero, z, eye.t(), use_gelu=True)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev
    vs_tanh = (out - F.gelu(z, approximate="tanh")).abs()
    vs_erf = (out - F.gelu(z)).abs()
    print(f"GELU epilogue vs tanh-GELU: max {vs_tanh.max().item():.3g} mean {vs_tanh.mean().item():.3g}; "
          f"vs exact GELU: max {vs_erf.max().item():.3g} mean {vs_erf.mean().item():.3g}")
    assert vs_tanh.mean() < vs_erf.mean()


@needs_triton
def test_fused_ops_capture_and_replay():
    """Both kernels in one CUDA graph (the runtime's use), replayed on new inputs."""
    x, y, bias, w, b = ln_inputs(784, 1152)
    z, zb = torch.randn(784, 4304, **BF16), torch.randn(4304, **BF16)

    def step():
        x_new, h = add_layernorm_triton(x, y, bias, w, b, 1e-6)
        return x_new, h, bias_gelu_triton(z, zb, "tanh")

    graph, outs = capture(step, warmup=1)
    for _ in range(2):
        for t in (x, y, z):
            t.copy_(torch.randn_like(t))
        graph.replay()
        torch.cuda.synchronize()
        ref_x, ref_h = add_layernorm_torch(x, y, bias, w, b, 1e-6)
        assert torch.equal(outs[0], ref_x)
        assert_within_rounding(outs[1], ref_h)
        assert_within_rounding(outs[2], bias_gelu_torch(z, zb, "tanh"))


@needs_triton
@pytest.mark.parametrize("layout,T,gelu_impl", [("vision", 784, "epilogue"), ("vision", 785, "triton"),
                                               ("vision", 3136, "torch"), ("audio", 130, "triton"),
                                               ("audio", 1040, "torch"), ("audio", 7, "triton")])
def test_fused_block_bf16_real_sizes(layout, T, gelu_impl):
    """The block's second half as the encoders will run it (both add_layernorm kernels, fc1+GELU by
    ``gelu_impl``): error against float64 at most 1.5x the unfused block's, residual and output."""
    heads, dim, mlp, approximate, eps = {"vision": (16, 72, 4304, "tanh", 1e-6),
                                         "audio": (20, 64, 5120, "none", 1e-5)}[layout]
    hidden = heads * dim
    x, o = torch.randn(T, hidden, **BF16), torch.randn(T, heads, dim, **BF16)
    p = block_params(hidden, mlp, torch.bfloat16, CUDA, eps)
    next_norm = ((torch.randn(hidden, device=CUDA) * 0.3 + 1).bfloat16(), (torch.randn(hidden, **BF16) * 0.3), eps)
    exact = exact_block_out(x, o, p, next_norm, approximate)
    unfused = unfused_block_out(x, o, p, next_norm, approximate)
    fused = fused_block_out(x, o, p, next_norm, approximate, impl="triton", gelu_impl=gelu_impl)
    errs = [(rel_err64(f, e), rel_err64(u, e)) for f, u, e in zip(fused, unfused, exact)]
    print(f"fused block {layout} T={T} gelu={gelu_impl}: rel err (fused, unfused) x {errs[0][0]:.3g}, "
          f"{errs[0][1]:.3g}; h {errs[1][0]:.3g}, {errs[1][1]:.3g}")
    assert all(f <= 1.5 * u for f, u in errs)


# ---- audio conv front-end --------------------------------------------------------------------------


def front_inputs(C: int, seed: int = 0):
    """bf16 chunks ``[C, 128, 100]`` (the runtime's buffer), the three convs' weights as the
    encoder holds them (conv2 and conv3 channels-last), ``conv_valid [C, 3]`` with the last quarter
    of the chunks cut at random lengths (short audios) and the rest whole."""
    g = torch.Generator(device=CUDA).manual_seed(seed)

    def r(*shape, s=1.0):
        return (torch.randn(*shape, device=CUDA, generator=g) * s).to(torch.bfloat16)

    ch = 480
    chunks = r(C, 128, 100)
    w1 = r(ch, 1, 3, 3, s=1 / 3)
    w2, w3 = (r(ch, ch, 3, 3, s=(9 * ch) ** -0.5).contiguous(memory_format=torch.channels_last) for _ in range(2))
    convs = [(w1, r(ch, s=0.3)), (w2, r(ch, s=0.3)), (w3, r(ch, s=0.3))]
    lens = [100] * (C - C // 4) + torch.randint(1, 100, (C // 4,), generator=g, device=CUDA).tolist()
    conv_valid = torch.tensor([conv_lens(n) for n in lens], device=CUDA)
    return chunks, convs, conv_valid


def assert_as_accurate_as_unfused(out, unfused, exact, label: str) -> None:
    """``out`` has the unfused output's shape and dtype, and both its relative L2 and max abs error
    against the float64 reference are within 1.5x the unfused bf16 path's (+1e-3 on the max)."""
    assert out.shape == unfused.shape and out.dtype == unfused.dtype
    err, err_unfused = rel_err64(out, exact), rel_err64(unfused, exact)
    top, top_unfused = (out.double() - exact).abs().max().item(), (unfused.double() - exact).abs().max().item()
    print(f"{label}: rel err {err:.3g} (unfused {err_unfused:.3g}), max abs {top:.3g} (unfused {top_unfused:.3g})")
    assert err <= 1.5 * err_unfused and top <= 1.5 * top_unfused + 1e-3


@needs_triton
@pytest.mark.parametrize("C", [10, 80])
def test_audio_front_bf16_real_sizes(C):
    chunks, convs, conv_valid = front_inputs(C)
    exact = audio_front(chunks.double(), [(w.double(), b.double()) for w, b in convs], conv_valid, impl="torch")
    unfused = audio_front(chunks, convs, conv_valid, impl="torch")
    fused = audio_front(chunks, convs, conv_valid, impl="triton")
    assert fused.shape == (C, 13, 480 * 16) and fused.is_contiguous()
    assert (fused[exact == 0] == 0).all()  # the masked steps, cut chunks' included
    assert_as_accurate_as_unfused(fused, unfused, exact, f"audio front {C} chunks")
    # float32 chunks (the eager encoder's ``chunk_features``) are rounded to bf16 inside the kernel
    assert torch.equal(audio_front(chunks.float(), convs, conv_valid, impl="triton"), fused)


@needs_triton
def test_audio_front_capture_and_replay():
    """The fused front-end in a CUDA graph (the runtime's use), replayed on new chunks and new
    valid lengths."""
    chunks, convs, conv_valid = front_inputs(16)

    def step():
        return audio_front(chunks, convs, conv_valid, impl="triton")

    graph, out = capture(step, warmup=1)
    for seed in (1, 2):
        new_chunks, _, new_valid = front_inputs(16, seed)
        chunks.copy_(new_chunks)
        conv_valid.copy_(new_valid)
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(out, step())


# ---- output row flags -------------------------------------------------------------------------------

# (outputs, rows, width): one 448x448 image's vision outputs, one and eight 10 s clips' audio output,
# an odd bucket's rows, a narrow width, more outputs than one launch reads
FLAG_SHAPES = [(4, 196, 2048), (1, 130, 2048), (1, 1040, 2048), (4, 785, 2048), (2, 7, 1280), (6, 33, 2048)]


def planted(n: int, rows: int, cols: int, seed: int, dtype=torch.bfloat16) -> list[torch.Tensor]:
    """``n`` random CUDA ``[rows, cols]`` tensors with the dtype's largest finite values of both
    signs, then a NaN, +inf and -inf (twice each), at random (tensor, row, column) places."""
    g = torch.Generator().manual_seed(seed)
    ts = [(torch.randn(rows, cols, generator=g) * 3).to(device=CUDA, dtype=dtype) for _ in range(n)]
    big = torch.finfo(dtype).max
    for v in [big, -big, float("nan"), float("inf"), float("-inf")] * 2:
        k, r, c = (int(torch.randint(m, (1,), generator=g)) for m in (n, rows, cols))
        ts[k][r, c] = v
    return ts


@needs_triton
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("n,rows,cols", FLAG_SHAPES)
def test_row_flags_matches_reference(n, rows, cols, dtype):
    """The kernel over the outputs, over them stacked and over strided views of them: exactly the
    reference's flags; ``auto`` runs the kernel on CUDA."""
    for seed in range(3):
        ts = planted(n, rows, cols, seed, dtype)
        want = row_flags_torch(ts)
        assert want.dtype == torch.bool and want.shape == (rows,) and not want.all()
        for got in (row_flags(ts), row_flags_triton(ts), row_flags_triton(torch.stack(ts))):
            assert got.is_cuda and torch.equal(got, want)
        halves = [t[:, ::2] for t in ts]  # column stride 2
        assert torch.equal(row_flags_triton(halves), row_flags_torch(halves))
        inner = torch.stack(ts, dim=1).transpose(0, 1)  # [n, rows, cols], rows of stride n * cols
        assert torch.equal(row_flags_triton(inner), want)


@needs_triton
@pytest.mark.parametrize("n,rows", [(4, 196), (1, 1040)])
def test_row_flags_capture_and_replay(n, rows):
    """In a CUDA graph (the runtime's use: ``buckets.forward`` stacks, then flags the stack), replayed
    on new outputs with other bad rows."""
    ts = planted(n, rows, 2048, seed=0)
    stacked = torch.stack(ts)

    def step():
        return row_flags(ts), row_flags(stacked), row_flags(torch.stack(ts))

    graph, outs = capture(step, warmup=1)
    for seed in (1, 2, 3):
        new = planted(n, rows, 2048, seed)
        for t, fresh in zip(ts, new):
            t.copy_(fresh)
        stacked.copy_(torch.stack(new))
        graph.replay()
        torch.cuda.synchronize()
        want = row_flags_torch(new)
        assert not want.all()
        for out in outs:
            assert torch.equal(out, want)


# ---- cuDNN attention --------------------------------------------------------------------------------

LAYOUTS = {"vision": (16, 72), "audio": (20, 64)}


def cu_of(seqlens) -> torch.Tensor:
    return torch.tensor([0, *torch.tensor(seqlens).cumsum(0).tolist()], dtype=torch.int32, device=CUDA)


def qkv_as_encoders_pass(qkv: torch.Tensor, layout: str):
    """From a ``[T, 3, H, D]`` projection: vision's q and k are written contiguous by the rotary, v
    is a view; audio's q, k and v are all views of the projection."""
    q, k, v = qkv.unbind(1)
    return (q.contiguous(), k.contiguous(), v) if layout == "vision" else (q, k, v)


def reference(q, k, v, seqlens) -> torch.Tensor:
    out = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
    start = 0
    for n in seqlens:
        s = slice(start, start + n)
        if n:
            out[s] = F.scaled_dot_product_attention(
                q[s].float().transpose(0, 1), k[s].float().transpose(0, 1), v[s].float().transpose(0, 1)
            ).transpose(0, 1)
        start += n
    return out


def assert_as_accurate_as_fa2(out, q, k, v, seqlens, label: str) -> None:
    """``out`` (attention of q, k, v over ``seqlens``) has q's shape and dtype and a max abs error
    against the fp32 reference within 1.5x FlashAttention varlen's (+1e-3)."""
    ref = reference(q, k, v, seqlens)
    fa2 = varlen_attention(q, k, v, cu_of(seqlens), max(seqlens), None, "varlen")
    assert out.shape == q.shape and out.dtype == q.dtype
    err, err_fa2 = (out.float() - ref).abs().max().item(), (fa2.float() - ref).abs().max().item()
    print(f"{label}: max abs err {err:.3g} (FA2 {err_fa2:.3g})")
    assert err <= 1.5 * err_fa2 + 1e-3


SEGMENTS = {
    "vision": [(196,), (784,), (196, 0, 784, 37, 0, 0), (3680, 256, 256, 128), (784,) * 8 + (128,)],
    "audio": [(104, 26), (104, 26, 0, 104, 3, 0), (104,) * 10 + (0,) * 6],
}


@needs_cudnn
@pytest.mark.parametrize("layout,seqlens", [(lay, s) for lay, cases in SEGMENTS.items() for s in cases])
def test_cudnn_matches_reference(layout, seqlens):
    heads, dim = LAYOUTS[layout]
    assert available_backends(CUDA, torch.bfloat16, dim) == ["varlen", "cudnn"]
    qkv = torch.randn(sum(seqlens), 3, heads, dim, **BF16)
    q, k, v = qkv_as_encoders_pass(qkv, layout)
    cu, bound = cu_of(seqlens), max(seqlens)
    out = varlen_attention(q, k, v, cu, bound, None, "cudnn")
    assert_as_accurate_as_fa2(out, q, k, v, seqlens, f"cudnn {layout} {seqlens[:6]}{'...' if len(seqlens) > 6 else ''}")


@needs_cudnn
@pytest.mark.parametrize("layout", ["vision", "audio"])
def test_cudnn_capture_replays_new_segments(layout):
    """Captured once with static q/k/v, ``cu_seqlens`` and bound; replayed after new tokens and new
    segment lengths (same count, same total, same bound, zero-length segments included)."""
    heads, dim = LAYOUTS[layout]
    plans = {"vision": [(784, 196, 0, 44), (0, 500, 500, 24), (1, 1, 1, 1021)],
             "audio": [(104, 26, 0, 0), (104, 0, 26, 0), (52, 52, 26, 0)]}[layout]
    total, bound = sum(plans[0]), max(max(p) for p in plans)
    qkv = torch.randn(total, 3, heads, dim, **BF16)
    q, k, v = qkv_as_encoders_pass(qkv, layout)
    cu = cu_of(plans[0])

    graph, out = capture(lambda: varlen_attention(q, k, v, cu, bound, None, "cudnn"), warmup=1)
    for seqlens in plans:
        cu.copy_(cu_of(seqlens))
        qkv.copy_(torch.randn_like(qkv))
        if layout == "vision":
            q.copy_(qkv[:, 0])
            k.copy_(qkv[:, 1])
        graph.replay()
        torch.cuda.synchronize()
        err = (out.float() - reference(q, k, v, seqlens)).abs().max().item()
        assert err < 2e-2, (seqlens, err)


@needs_cudnn
def test_fastest_backend_on_real_graphs():
    heads, dim = LAYOUTS["vision"]
    seqlens = (3680, 256, 256, 128)
    qkv = torch.randn(sum(seqlens), 3, heads, dim, **BF16)
    q, k, v = qkv_as_encoders_pass(qkv, "vision")
    cu = cu_of(seqlens)

    def run(backend):
        return capture(lambda: varlen_attention(q, k, v, cu, max(seqlens), None, backend), warmup=1)[0].replay

    backends = available_backends(CUDA, torch.bfloat16, dim)
    best, times = fastest_backend(run, backends, repeats=10)
    shown = ", ".join(f"{b} {t * 1e3:.1f} us" for b, t in times.items())
    print(f"fastest_backend vision 3680 + padding: {best}; {shown}")
    assert best in backends and set(times) == set(backends)
    assert all(0 < t < 100 for t in times.values())


@pytest.mark.parametrize("seqlens", [(3520,), (784,) * 8, (784,) * 8 + (0, 0), (1024, 1024, 3520), (256,)])
def test_dense_matches_reference(seqlens):
    """torch's cuDNN SDPA over runs of equal-length segments: as accurate as FlashAttention varlen."""
    heads, dim = LAYOUTS["vision"]
    qkv = torch.randn(sum(seqlens), 3, heads, dim, **BF16)
    q, k, v = qkv_as_encoders_pass(qkv, "vision")
    cu, bound = cu_of(seqlens), max(seqlens)
    out = varlen_attention(q, k, v, cu, bound, seqlens, "dense")
    assert_as_accurate_as_fa2(out, q, k, v, seqlens, f"dense {seqlens[:4]}")
