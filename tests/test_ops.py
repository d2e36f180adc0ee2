"""The fused ops (``encoders/ops``) on the CPU.

References: in float32 each is exactly the unfused code it replaces (the encoders' own block
functions are recomposed from the ops and compared bit for bit). Triton kernels: run in Triton's
interpreter on CPU tensors (skipped when triton does not import) against their references over
dtypes, odd row counts and widths: the residual sum is bit-identical, everything else within one
rounding of the dtype, and the error against float64 at most 1.5x the unfused sequence's. The audio
front-end's kernels likewise, on odd sizes with masks that cut some chunks, and the whole audio
encoder with them against transformers.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fused_blocks import block_params, exact_block_out, fused_block_out, unfused_block_out

from omnienc.encoders.audio import conv_lens
from omnienc.encoders.ops import (
    add_layernorm,
    add_layernorm_torch,
    add_layernorm_triton,
    audio_front,
    bias_gelu,
    bias_gelu_mask,
    bias_gelu_mask_torch,
    bias_gelu_mask_triton,
    bias_gelu_torch,
    bias_gelu_triton,
    conv1_gelu_mask,
    conv1_gelu_mask_triton,
    linear_gelu,
    row_flags,
    row_flags_torch,
    row_flags_triton,
)
from omnienc.encoders.ops._triton import interpreting

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # fp16 sums, exp tails

ULP = {torch.float32: 2.0**-23, torch.bfloat16: 2.0**-7, torch.float16: 2.0**-10}
FP16_BOUND = torch.finfo(torch.float16).max - 1000  # the audio encoder's clamp


@pytest.fixture
def interpreter(monkeypatch):
    """Triton's CPU interpreter (``TRITON_INTERPRET=1`` from before triton's import: conftest.py sets
    it where there is no CUDA; with CUDA the kernels are tested compiled, in test_gpu_ops.py),
    rounding float32 -> bfloat16 to nearest even as CUDA does (the interpreter itself truncates that
    conversion; every other conversion it does as the GPU)."""
    pytest.importorskip("triton")
    import triton.language.standard
    from triton.runtime import interpreter as interp

    if not isinstance(triton.language.standard.sum, interp.InterpretedFunction):
        pytest.skip("Triton is not in interpreter mode (TRITON_INTERPRET=1 before its import; "
                    "with CUDA present test_gpu_ops.py tests the kernels)")

    if not hasattr(interp.InterpreterBuilder, "cast_impl"):
        pytest.skip("this triton's interpreter has no cast_impl to round bfloat16 with")
    import triton.language as tl

    truncating = interp.InterpreterBuilder.cast_impl

    def cast_impl(self, src, dst_type):
        if src.dtype.scalar == tl.float32 and dst_type.scalar == tl.bfloat16:
            rounded = torch.from_numpy(np.ascontiguousarray(src.data)).to(torch.bfloat16)
            return interp.TensorHandle(rounded.view(torch.int16).numpy().view(np.uint16), dst_type.scalar)
        return truncating(self, src, dst_type)

    monkeypatch.setattr(interp.InterpreterBuilder, "cast_impl", cast_impl)


def rel_err64(a: torch.Tensor, exact: torch.Tensor) -> float:
    return ((a.double() - exact).norm() / exact.norm()).item()


def assert_within_rounding(a: torch.Tensor, ref: torch.Tensor, ulps: float = 1.0, atol: float = 1e-6) -> None:
    """|a - ref| <= ulps units in the last place of the dtype at ref's magnitude, plus ``atol`` for
    results near 0 (outputs are O(1); float32 rounding of cancelling terms is ~1e-7 there)."""
    tol = ulps * ULP[ref.dtype] * ref.float().abs() + atol
    bad = (a.float() - ref.float()).abs() > tol
    assert not bad.any(), f"{int(bad.sum())} values off by more than {ulps} ulp: {a[bad][:4]} vs {ref[bad][:4]}"


def big(*shape, scale: float, dtype=torch.float32) -> torch.Tensor:
    """Random values of std ``scale``, finite in fp16 (sums of two may overflow it)."""
    return (torch.randn(*shape) * scale).clamp(-6e4, 6e4).to(dtype)


def ln_inputs(rows: int, n: int, dtype, scale: float = 1.0):
    x, y = big(rows, n, scale=scale, dtype=dtype), big(rows, n, scale=scale, dtype=dtype)
    bias = torch.randn(n, dtype=dtype) * 0.3
    w = torch.randn(n, dtype=dtype) * 0.3 + 1
    b = torch.randn(n, dtype=dtype) * 0.3
    return x, y, bias, w, b


# ---- references: exactly the code they replace ------------------------------------------------------


def test_add_layernorm_reference_is_the_unfused_code():
    x, y, bias, w, b = ln_inputs(7, 48, torch.float32)
    x_new, h = add_layernorm_torch(x, y, None, w, b, 1e-6)
    assert torch.equal(x_new, x + y) and torch.equal(h, F.layer_norm(x + y, (48,), w, b, 1e-6))
    x_new, h = add_layernorm_torch(x, y, bias, w, b, 1e-5)
    assert torch.equal(x_new, x + (y + bias)) and torch.equal(h, F.layer_norm(x + (y + bias), (48,), w, b, 1e-5))
    xh, yh = big(7, 48, scale=3e4, dtype=torch.float16), big(7, 48, scale=3e4, dtype=torch.float16)
    # sums overflow fp16: the clamp catches them
    x_new, h = add_layernorm_torch(xh, yh, None, w.half(), b.half(), 1e-5, clamp=FP16_BOUND)
    unfused = (xh + yh).clamp(-FP16_BOUND, FP16_BOUND)
    assert torch.isinf(xh + yh).any() and torch.equal(x_new, unfused)
    assert torch.equal(h, F.layer_norm(unfused, (48,), w.half(), b.half(), 1e-5))


@pytest.mark.parametrize("approximate", ["tanh", "none"])
def test_ops_recompose_the_block_exactly_in_float32(approximate):
    """The block's second half from the ops (what the encoders' blocks become) is the unfused code
    bit for bit in float32 on the CPU: vision (tanh-GELU) and audio (exact GELU)."""
    T, H, D, mlp = 13, 4, 12, 80
    x, o = torch.randn(T, H * D), torch.randn(T, H, D)
    p = block_params(H * D, mlp, torch.float32)
    next_norm = (torch.randn(H * D) * 0.3 + 1, torch.randn(H * D) * 0.3, 1e-5)
    want = unfused_block_out(x, o, p, next_norm, approximate)
    got = fused_block_out(x, o, p, next_norm, approximate)
    assert all(torch.equal(g, w) for g, w in zip(got, want))


def test_ops_recompose_the_audio_fp16_clamp_exactly():
    """fp16: the audio clamp after the fc2 residual, with sums big enough to overflow and be clamped."""
    L, d, ffn = 11, 32, 64
    x, o = big(L, d, scale=3e4, dtype=torch.float16), torch.randn(L, 4, 8).half()
    out_w, out_b, norm2, fc1_w, fc1_b, fc2_w, fc2_b = block_params(d, ffn, torch.float16)
    p = (out_w, out_b, norm2, fc1_w, fc1_b, fc2_w * 3e4, fc2_b)
    post = (torch.randn(d).half() * 0.3 + 1, torch.randn(d).half() * 0.3, 1e-5)
    want = unfused_block_out(x, o, p, post, "none", clamp=FP16_BOUND)
    got = fused_block_out(x, o, p, post, "none", clamp=FP16_BOUND)
    assert (want[0].abs() == 64512).any()  # clamped (the bound as fp16 holds it)
    assert all(torch.equal(g, w) for g, w in zip(got, want))


def test_linear_gelu_reference_is_the_unfused_code():
    x, w, b = torch.randn(5, 3, 16), torch.randn(24, 16), torch.randn(24)
    for approximate in ("tanh", "none"):
        assert torch.equal(linear_gelu(x, w, b, approximate), F.gelu(F.linear(x, w, b), approximate=approximate))
    y = torch.randn(7, 24)
    assert torch.equal(bias_gelu_torch(y, b, "tanh"), F.gelu(y + b, approximate="tanh"))
    assert torch.equal(bias_gelu(y, None), F.gelu(y))


def test_linear_gelu_epilogue_is_refused_where_it_would_mean_another_gelu():
    """On CUDA torch._addmm_activation's GELU is the tanh approximation, on the CPU exact GELU: the
    epilogue serves tanh on CUDA only. Its call (transposes, leading dims) is checked here against
    the CPU's exact GELU, which is what the same call computes on the CPU."""
    lg = importlib.import_module("omnienc.encoders.ops.linear_gelu")
    x, w, b = torch.randn(2, 5, 16), torch.randn(24, 16), torch.randn(24)
    with pytest.raises(ValueError, match="tanh"):
        linear_gelu(x, w, b, "none", impl="epilogue")
    with pytest.raises(ValueError, match="CUDA"):
        linear_gelu(x, w, b, "tanh", impl="epilogue")
    with pytest.raises(ValueError, match="impl"):
        linear_gelu(x, w, b, "tanh", impl="cublas")
    with pytest.raises(ValueError, match="approximate"):
        linear_gelu(x, w, b, "erf")
    torch.testing.assert_close(lg._addmm_gelu(x, w, b), F.gelu(F.linear(x, w, b)))


def test_impl_choice_on_the_cpu():
    x, y, bias, w, b = ln_inputs(3, 16, torch.float32)
    out = add_layernorm(x, y, bias, w, b, 1e-6)  # auto on CPU tensors: the reference, triton or not
    ref = add_layernorm_torch(x, y, bias, w, b, 1e-6)
    assert all(torch.equal(o, r) for o, r in zip(out, ref))
    with pytest.raises(ValueError, match="unknown impl"):
        add_layernorm(x, y, bias, w, b, 1e-6, impl="cuda")
    if not interpreting():
        with pytest.raises(ValueError, match="CUDA tensors"):
            add_layernorm(x, y, bias, w, b, 1e-6, impl="triton")
        with pytest.raises(ValueError, match="CUDA tensors"):
            bias_gelu(y, b, impl="triton")


def encoders_front_end(chunks, convs, conv_valid):
    """The audio encoder's front-end as separate passes, the spec of ``ops.audio_front``'s
    reference: conv1 as unfold + linear, conv2d for conv2 and conv3, GELU and mask after each."""
    (w1, b1), *rest = convs
    C = chunks.shape[0]
    x = chunks[:, None].to(w1.dtype)
    f1, t1 = (x.shape[2] - 1) // 2 + 1, (x.shape[3] - 1) // 2 + 1
    patches = F.unfold(x, 3, padding=1, stride=2).transpose(1, 2)
    x = F.linear(patches, w1.view(w1.shape[0], -1), b1)
    x = x.view(C, f1, t1, -1).permute(0, 3, 1, 2)
    for i, conv in enumerate((None, *rest)):
        if conv is not None:
            x = F.conv2d(x, conv[0], conv[1], 2, 1)
        keep = torch.arange(x.shape[-1]) < conv_valid[:, i : i + 1]
        x = F.gelu(x) * keep[:, None, None, :].to(x.dtype)
    C, ch, f, t = x.shape
    return x.permute(0, 3, 1, 2).reshape(C, t, ch * f)


def front_inputs(C: int, mel: int, frames: int, ch: int, dtype):
    """Chunks, the three convs' (weight, bias) (the later two channels-last, as the encoder keeps
    them) and ``conv_valid [C, 3]``: chunk 0 full length, the others cut at random lengths (>= 1)."""
    chunks = torch.randn(C, mel, frames)  # float32, as the reference casts them
    w1 = (torch.randn(ch, 1, 3, 3) / 3).to(dtype)
    w2, w3 = ((torch.randn(ch, ch, 3, 3) / (3 * ch**0.5)).to(dtype).contiguous(memory_format=torch.channels_last)
              for _ in range(2))
    b1, b2, b3 = ((torch.randn(ch) * 0.3).to(dtype) for _ in range(3))
    lens = [frames] + torch.randint(1, frames + 1, (C - 1,)).tolist()
    conv_valid = torch.tensor([[a, b, c] for a, b, c in map(conv_lens, lens)])
    return chunks, [(w1, b1), (w2, b2), (w3, b3)], conv_valid


def test_audio_front_reference_is_the_encoders_code():
    """float32 on the CPU: ``audio_front`` (its ``auto`` is the reference there) and the encoder's
    ``front_end`` are the code they replace, bit for bit."""
    chunks, convs, conv_valid = front_inputs(5, 13, 11, 24, torch.float32)
    want = encoders_front_end(chunks, convs, conv_valid)
    assert torch.equal(audio_front(chunks, convs, conv_valid), want)
    assert torch.equal(audio_front(chunks, convs, conv_valid, impl="torch"), want)
    assert (want[1:] == 0).any() and want.shape == (5, 2, 24 * 2)


# ---- Triton kernels in the interpreter ----------------------------------------------------------------

LN_CASES = [  # (rows, width, dtype, bias, clamp)
    (1, 48, torch.bfloat16, True, False),
    (7, 1152, torch.bfloat16, True, False),
    (130, 32, torch.bfloat16, False, False),
    (785, 48, torch.bfloat16, True, False),
    (7, 1280, torch.float32, True, False),
    (130, 48, torch.float32, False, False),
    (7, 32, torch.float16, True, True),
    (130, 48, torch.float16, False, False),
]


@pytest.mark.parametrize("rows,n,dtype,with_bias,clamp", LN_CASES)
def test_add_layernorm_triton_matches_reference(interpreter, rows, n, dtype, with_bias, clamp):
    torch.manual_seed(rows * n)
    x, y, bias, w, b = ln_inputs(rows, n, dtype, scale=3e4 if clamp else 1.0)
    bias = bias if with_bias else None
    c = FP16_BOUND if clamp else None
    x_new, h = add_layernorm_triton(x, y, bias, w, b, 1e-6, c)
    ref_x, ref_h = add_layernorm_torch(x, y, bias, w, b, 1e-6, c)
    assert x_new.dtype == dtype and x_new.shape == x.shape and h.shape == x.shape
    assert torch.equal(x_new, ref_x)  # the residual stream bit for bit (clamped and all)
    if clamp:
        assert (ref_x.abs() == 64512).any()
    if dtype == torch.float32:
        torch.testing.assert_close(h, ref_h, rtol=1e-5, atol=1e-5)
    else:
        assert_within_rounding(h, ref_h)
    if dtype != torch.float32:  # error against float64 on the same inputs: no worse than unfused
        s = x.double() + (y.double() + (bias.double() if with_bias else 0))
        if clamp:
            s = s.clamp(-c, c)
        exact = F.layer_norm(s, (n,), w.double(), b.double(), 1e-6)
        assert rel_err64(h, exact) <= 1.5 * rel_err64(ref_h, exact) + 1e-12


def test_add_layernorm_triton_takes_strided_rows_and_leading_dims(interpreter):
    big = torch.randn(2, 5, 80, dtype=torch.bfloat16)
    x = big[..., :48]  # rows of stride 80
    y = torch.randn(2, 5, 48, dtype=torch.bfloat16)
    _, _, bias, w, b = ln_inputs(1, 48, torch.bfloat16)
    out = add_layernorm(x, y, bias, w, b, 1e-5, impl="triton")
    ref = add_layernorm_torch(x, y, bias, w, b, 1e-5)
    assert out[0].shape == (2, 5, 48) and torch.equal(out[0], ref[0])
    assert_within_rounding(out[1], ref[1])
    empty = torch.empty(0, 48, dtype=torch.bfloat16)
    assert add_layernorm_triton(empty, empty, None, w, b, 1e-5)[1].shape == (0, 48)


GELU_CASES = [  # (rows, width, dtype, approximate)
    (1, 80, torch.bfloat16, "tanh"),
    (7, 1100, torch.bfloat16, "none"),  # two column blocks
    (130, 48, torch.bfloat16, "tanh"),
    (785, 32, torch.bfloat16, "none"),
    (7, 200, torch.float16, "tanh"),
    (130, 80, torch.float16, "none"),
    (7, 1100, torch.float32, "tanh"),
    (130, 48, torch.float32, "none"),
]


@pytest.mark.parametrize("rows,n,dtype,approximate", GELU_CASES)
def test_bias_gelu_triton_matches_reference(interpreter, rows, n, dtype, approximate):
    torch.manual_seed(rows + n)
    y = (torch.randn(rows, n) * 3).to(dtype)  # through GELU's curved part and both tails
    b = torch.randn(n, dtype=dtype)
    out = bias_gelu_triton(y, b, approximate)
    ref = bias_gelu_torch(y, b, approximate)
    assert out.dtype == dtype and out.shape == y.shape
    if dtype == torch.float32:
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    else:
        assert_within_rounding(out, ref)
    if dtype != torch.float32:
        exact = F.gelu(y.double() + b.double(), approximate=approximate)
        assert rel_err64(out, exact) <= 1.5 * rel_err64(ref, exact) + 1e-12
    assert torch.equal(bias_gelu_triton(y, None, approximate), bias_gelu_triton(y, torch.zeros_like(b), approximate))


def test_linear_gelu_triton_matches_reference(interpreter):
    x, w, b = torch.randn(3, 7, 48), torch.randn(80, 48) * 48**-0.5, torch.randn(80)
    for approximate in ("tanh", "none"):
        for dtype in (torch.float32, torch.bfloat16):
            xd, wd, bd = x.to(dtype), w.to(dtype), b.to(dtype)
            got = linear_gelu(xd, wd, bd, approximate, impl="triton")
            ref = linear_gelu(xd, wd, bd, approximate, impl="torch")
            exact = F.gelu(F.linear(xd.double(), wd.double(), bd.double()), approximate=approximate)
            assert got.shape == (3, 7, 80)
            assert rel_err64(got, exact) <= 1.5 * rel_err64(ref, exact) + 1e-6


@pytest.mark.parametrize("approximate", ["tanh", "none"])
def test_fused_block_bf16_in_the_interpreter(interpreter, approximate):
    """The whole fused block (both add_layernorm kernels, the bias+GELU kernel) in bf16: error
    against float64 at most 1.5x the unfused block's, for the residual and the normalized output."""
    T, H, D, mlp = 37, 4, 12, 80
    x, o = torch.randn(T, H * D).bfloat16(), torch.randn(T, H, D).bfloat16()
    p = block_params(H * D, mlp, torch.bfloat16)
    next_norm = ((torch.randn(H * D) * 0.3 + 1).bfloat16(), (torch.randn(H * D) * 0.3).bfloat16(), 1e-6)
    exact = exact_block_out(x, o, p, next_norm, approximate)
    unfused = unfused_block_out(x, o, p, next_norm, approximate)
    fused = fused_block_out(x, o, p, next_norm, approximate, impl="triton", gelu_impl="triton")
    for f, u, e in zip(fused, unfused, exact):
        assert rel_err64(f, e) <= 1.5 * rel_err64(u, e)


# ---- the benchmark's wiring -------------------------------------------------------------------------


def assert_front_groups_compare_like_with_like(kb, impl: str) -> None:
    """The front-end groups on a tiny shape: every checked variant within a few bf16 roundings of
    its group's reference (a missing bias or a wrong mask is off by ~0.1)."""
    for group, args, variants in kb._front_groups(kb.FrontShape("tiny", 3, 13, 11, 24), torch.device("cpu"), impl):
        ref = variants[0].fn(*args)
        for v in variants:
            if v.check:
                assert kb._max_err(v.fn(*args), ref) < 0.05, (group, v.name)
        assert any(v.bytes for v in variants) or all(v.flops for v in variants)


def test_kernel_bench_groups_compare_like_with_like():
    """Every checked variant of every group computes its group's reference (here with the ops'
    PyTorch paths on a tiny shape; within a few bf16 roundings, as a bias folded after the GEMM
    rounds twice: a missing or doubled term would be off by ~0.3), and the table renders."""
    import kernel_bench as kb

    for approximate in ("tanh", "none"):
        shape = kb.Shape("tiny", 7, 48, 80, approximate, 1e-6)
        for group, args, variants in kb._groups(shape, torch.device("cpu"), impl="torch"):
            ref = variants[0].fn(*args)
            for v in variants:
                if v.check and "epilogue" not in v.name:
                    assert kb._max_err(v.fn(*args), ref) < 0.05, (group, v.name)
            assert any(v.bytes for v in variants) or all(v.flops for v in variants)
    assert_front_groups_compare_like_with_like(kb, "torch")
    rows = [{"shape": "s", "group": "g", "variant": "a", "us": 2.0, "gbs": 2400.0, "peak_share": 0.5,
             "max_abs_err": 0.0},
            {"shape": "s", "group": "g", "variant": "b", "error": "boom", "max_abs_err": None},
            {"shape": "s", "group": "g", "variant": "c", "us": 10.0, "tflops": 300.0, "max_abs_err": 0.0039}]
    lines = kb.markdown(rows).splitlines()
    assert lines[2] == "| s | g | a | 2.0 | 2400 (50%) |  | 0 |"
    assert lines[3] == "| s | g | b | error: boom |  |  |  |"
    assert lines[4] == "| s | g | c | 10.0 |  | 300 | 0.0039 |"


def test_kernel_bench_front_groups_with_the_kernels(interpreter):
    import kernel_bench as kb

    assert [s.tokens for s in kb.FRONT_SHAPES] == [130, 1040]
    assert_front_groups_compare_like_with_like(kb, "triton")


# ---- the audio front-end's kernels ------------------------------------------------------------------
#
# bf16 tolerance: the reference rounds what it computes before GELU (the convolution's output, and on
# the CPU its bias sum again: ``F.linear`` rounds ``x @ W^T``, then ``+ b``; or ``y + b``), then
# GELU's output; the fused path rounds the unbiased convolution's output (conv1's GEMM, cuDNN for
# conv2 and conv3), then GELU of the float32 pre-activation once. Each rounding is within
# half an ulp (<= 2^-8 |v| in bf16) and |GELU'| <= 1.13, so the two differ by at most about
# ``ULP * (|ref| + |terms rounded before GELU|)``: ``rounded`` is that sum of magnitudes. float32:
# only the order of the products and the erf differ.


def assert_front_close(out, ref, rounded, dtype):
    if dtype == torch.float32:
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
        return
    tol = ULP[dtype] * (ref.float().abs() + rounded.float().abs()) + 1e-6
    bad = (out.float() - ref.float()).abs() > tol
    assert not bad.any(), f"{int(bad.sum())} values off: {out[bad][:4]} vs {ref[bad][:4]}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("C,mel,frames,ch", [(4, 13, 11, 24), (3, 16, 100, 8), (2, 7, 20, 130)])
def test_conv1_gelu_mask_triton_matches_reference(interpreter, dtype, C, mel, frames, ch):
    torch.manual_seed(C * mel + frames)
    chunks, convs, conv_valid = front_inputs(C, mel, frames, ch, dtype)
    (w, b), valid = convs[0], conv_valid[:, 0]
    out = conv1_gelu_mask_triton(chunks, w, b, valid)
    ref = conv1_gelu_mask(chunks, w, b, valid, impl="torch")
    f1, t1 = ref.shape[2:]
    assert out.shape == ref.shape == (C, ch, f1, t1) and out.dtype == dtype
    assert out.is_contiguous(memory_format=torch.channels_last) and out.stride() == ref.stride()
    xw = F.conv2d(chunks[:, None].to(dtype).double(), w.double(), None, 2, 1)
    z = xw + b.double()[:, None, None]  # the exact pre-activation
    keep = (torch.arange(t1) < valid[:, None])[:, None, None, :]
    assert (~keep).any() and keep[0].all()  # some chunks cut, chunk 0 whole
    assert (out[~keep.expand_as(out)] == 0).all()
    assert_front_close(out, ref, z.abs() + xw.abs(), dtype)
    if dtype != torch.float32:
        exact = F.gelu(z) * keep
        assert rel_err64(out, exact) <= 1.5 * rel_err64(ref, exact) + 1e-12
    # chunks already in the weights' dtype, and a strided view of them, read the same
    same = conv1_gelu_mask_triton(torch.cat([chunks, chunks], 2)[..., :frames].to(dtype), w, b, valid)
    assert torch.equal(same, out)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("flatten", [False, True])
@pytest.mark.parametrize("C,ch,f,t", [(3, 24, 7, 6), (2, 130, 4, 13), (4, 8, 32, 3)])
def test_bias_gelu_mask_triton_matches_reference(interpreter, dtype, flatten, C, ch, f, t):
    torch.manual_seed(C * ch + f * t)
    y = (torch.randn(C, ch, f, t) * 3).to(dtype).contiguous(memory_format=torch.channels_last)
    b = (torch.randn(ch) * 0.3).to(dtype)
    valid = torch.tensor([t] + torch.randint(1, t + 1, (C - 1,)).tolist())
    valid[-1] = max(1, t - 2)  # at least one chunk cut
    out = bias_gelu_mask_triton(y, b, valid, flatten)
    ref = bias_gelu_mask_torch(y, b, valid, flatten)
    assert out.shape == ref.shape and out.dtype == dtype
    if flatten:
        assert out.shape == (C, t, ch * f) and out.is_contiguous()
    else:
        assert out.is_contiguous(memory_format=torch.channels_last)
    z = y.double() + b.double()[:, None, None]
    keep = (torch.arange(t) < valid[:, None])[:, None, None, :]
    exact = F.gelu(z) * keep
    if flatten:
        z, exact = (v.permute(0, 3, 1, 2).reshape(C, t, ch * f) for v in (z, exact))
    assert (out[exact == 0] == 0).all()
    assert_front_close(out, ref, z, dtype)
    if dtype != torch.float32:
        assert rel_err64(out, exact) <= 1.5 * rel_err64(ref, exact) + 1e-12
    # any input layout (contiguous NCHW here) gives the same values
    assert torch.equal(bias_gelu_mask(y.contiguous(), b, valid, flatten, impl="triton"), out)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_audio_front_triton_matches_reference(interpreter, dtype):
    """The three convolutions with the kernels (conv2 and conv3 without bias, then bias_gelu_mask)
    against the reference, and against float64: no worse than 1.5x the reference's error."""
    torch.manual_seed(7)
    chunks, convs, conv_valid = front_inputs(4, 16, 100, 24, dtype)
    out = audio_front(chunks, convs, conv_valid, impl="triton")
    ref = audio_front(chunks, convs, conv_valid, impl="torch")
    assert out.shape == ref.shape == (4, 13, 24 * 2) and out.is_contiguous()
    exact = encoders_front_end(chunks.to(dtype).double(), [(w.double(), b.double()) for w, b in convs], conv_valid)
    if dtype == torch.float32:
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    else:
        assert rel_err64(out, exact) <= 1.5 * rel_err64(ref, exact)


def test_fusion_front_field():
    """``Fusion`` takes 2-tuples (``front`` stays ``auto``); ``UNFUSED`` unfuses the front-end too;
    ``block_out`` looks at its own two fields only."""
    from omnienc.encoders.block import UNFUSED, Fusion

    assert Fusion(*("torch", "torch")) == ("torch", "torch", "auto") and not Fusion("torch", "torch").fused_blocks
    assert UNFUSED.front == "torch" and not UNFUSED.fused_blocks and Fusion("auto", "torch", "torch").fused_blocks
    assert Fusion("auto", "auto", "triton").resolve(torch.zeros(1), "gelu") == ("auto", "torch", "triton")


def test_audio_front_impl_choice_on_the_cpu():
    chunks, convs, conv_valid = front_inputs(2, 13, 11, 24, torch.float32)
    with pytest.raises(ValueError, match="unknown impl"):
        audio_front(chunks, convs, conv_valid, impl="cuda")
    if not interpreting():
        with pytest.raises(ValueError, match="CUDA tensors"):
            conv1_gelu_mask(chunks, *convs[0], conv_valid[:, 0], impl="triton")
    else:
        with pytest.raises(ValueError, match="int64"):
            conv1_gelu_mask_triton(chunks, *convs[0], conv_valid[:, 0].int())
        with pytest.raises(ValueError, match="bias"):
            bias_gelu_mask_triton(torch.randn(2, 24, 3, 3), convs[1][1][:8], conv_valid[:, 1])


@torch.no_grad()
def test_audio_encoder_with_triton_front_matches_hf(interpreter, audio_pair):
    """The whole audio encoder with ``fusion.front = "triton"`` (the kernels in the interpreter)
    against transformers' module, float32: short audios (masked conv outputs), whole chunks and a
    zero-padded tail, alone and packed in one call."""
    from conftest import rel_err

    hf, native = audio_pair
    fused = native.with_options(fusion=("auto", "auto", "triton"))
    lens = [37, 100, 801]
    feats = [torch.randn(hf.config.num_mel_bins, T) for T in lens]
    ref = torch.cat([hf(f, torch.tensor([f.shape[1]])).last_hidden_state for f in feats])
    out = fused(torch.cat(feats, dim=1), torch.tensor(lens))
    assert out.shape == ref.shape
    assert rel_err(out, ref) <= 1e-5


# ---- output row finiteness flags --------------------------------------------------------------------


def planted(n: int, rows: int, cols: int, dtype, seed: int, bad: int = 6) -> list[torch.Tensor]:
    """``n`` random ``[rows, cols]`` tensors with the dtype's largest finite values of both signs
    at random (tensor, row, column) places (finite: they must not flag a row), then ``bad`` NaN /
    +inf / -inf at random places."""
    g = torch.Generator().manual_seed(seed)
    ts = [(torch.randn(rows, cols, generator=g) * 3).to(dtype) for _ in range(n)]
    big = torch.finfo(dtype).max
    for v in [big, -big] * 2 + ([float("nan"), float("inf"), float("-inf")] * bad)[:bad]:
        k, r, c = (int(torch.randint(m, (1,), generator=g)) for m in (n, rows, cols))
        ts[k][r, c] = v
    return ts


FLAG_CASES = [  # (tensors, rows, cols, dtype)
    (1, 1, 1, torch.float32),
    (1, 13, 33, torch.float32),
    (1, 37, 130, torch.bfloat16),
    (4, 7, 48, torch.bfloat16),
    (4, 29, 67, torch.float32),
    (4, 5, 2049, torch.bfloat16),  # two column steps
    (3, 11, 20, torch.float16),
]


@pytest.mark.parametrize("n,rows,cols,dtype", FLAG_CASES)
def test_row_flags_triton_matches_reference(interpreter, n, rows, cols, dtype):
    """The kernel over the tensors and over them stacked: exactly the reference's flags (which are
    today's ``isfinite(o).all(-1)`` chain), some rows flagged, the largest finite values not."""
    for seed in range(3):
        ts = planted(n, rows, cols, dtype, seed=seed * 1000 + rows * cols + n, bad=min(rows, 6) if seed else 1)
        want = torch.isfinite(ts[0]).all(-1)
        for t in ts[1:]:
            want &= torch.isfinite(t).all(-1)
        assert torch.equal(row_flags_torch(ts), want)
        assert torch.equal(row_flags_torch(torch.stack(ts)), want)
        for got in (row_flags_triton(ts), row_flags_triton(torch.stack(ts)), row_flags(ts, impl="triton")):
            assert got.dtype == torch.bool and got.shape == (rows,)
            assert torch.equal(got, want), (got, want)
        if rows > 1:
            assert not want.all()
    huge = [torch.full((rows, cols), torch.finfo(dtype).max, dtype=dtype) for _ in range(n)]
    assert row_flags_triton(huge).all() and row_flags_triton([-t for t in huge]).all()


def test_row_flags_triton_reads_views_in_place(interpreter):
    """Strided rows, strided and transposed columns, a stacked view whose tensors are not
    contiguous, more tensors than one launch reads (a second launch ANDs), mixed dtypes."""
    base = planted(1, 30, 90, torch.bfloat16, seed=1, bad=0)[0]
    base[12, 5], base[22, 20], base[3, 50] = float("nan"), float("inf"), float("-inf")  # rows 4, 7, 3 below
    views = [base[::3, :40], base[1::3, ::2], base[2::3, 7:50], base[:10, 45:].t()[:10].t()]
    assert all(v.shape[0] == 10 for v in views) and not any(v.is_contiguous() for v in views)
    want = row_flags_torch(views)
    assert torch.equal(row_flags_triton(views), want) and (~want).nonzero().flatten().tolist() == [3, 4, 7]
    inner = torch.stack(planted(3, 9, 24, torch.float32, seed=2), dim=1)  # [rows, n, cols]
    stacked = inner.transpose(0, 1)  # [n, rows, cols] view, rows of stride n * cols
    assert torch.equal(row_flags_triton(stacked), row_flags_torch(stacked))
    assert torch.equal(row_flags_triton(stacked[:, :, ::3]), row_flags_torch(stacked[:, :, ::3]))
    many = planted(6, 17, 21, torch.float32, seed=3) + [t.bfloat16() for t in planted(3, 17, 5, torch.float32, seed=4)]
    got = row_flags_triton(many)
    assert torch.equal(got, row_flags_torch(many)) and not got.all()
    for k in range(len(many)):  # each tensor's bad rows count, whichever launch reads it
        assert torch.equal(row_flags_triton(many[:k] + [torch.zeros_like(many[k]).fill_(float("nan"))]),
                           torch.zeros(17, dtype=torch.bool))


def test_row_flags_edges_and_impl_choice(interpreter):
    assert row_flags_triton(torch.empty(0, 8)).shape == (0,)
    assert row_flags_triton([torch.empty(5, 0), torch.empty(5, 0)]).tolist() == [True] * 5
    assert row_flags_triton(torch.empty(0, 5, 8)).tolist() == [True] * 5 == row_flags_torch(torch.empty(0, 5, 8)).tolist()
    x = planted(2, 6, 10, torch.float32, seed=5)
    assert torch.equal(row_flags(x), row_flags_torch(x))  # auto on CPU tensors: the reference
    x64 = [t.double() for t in x]
    assert torch.equal(row_flags(x64), row_flags_torch(x64))
    with pytest.raises(ValueError, match="reads"):
        row_flags(x64, impl="triton")
    with pytest.raises(ValueError, match="rows"):
        row_flags([x[0], x[1][:5]], impl="triton")
    with pytest.raises(ValueError, match="non-empty"):
        row_flags([])
    with pytest.raises(ValueError, match=r"\[rows, cols\]"):
        row_flags_torch([torch.stack(x)])
    with pytest.raises(ValueError, match="unknown impl"):
        row_flags(x, impl="cuda")


def test_lane_row_flags_takes_outputs_or_their_stack():
    """``runtime.buckets.row_flags`` (what every run computes): the reference's flags on the CPU, for
    the outputs as returned and for them stacked as the captured forward passes them."""
    from omnienc.runtime.buckets import row_flags as lane_row_flags

    outs = tuple(planted(4, 23, 40, torch.bfloat16, seed=6))
    want = row_flags_torch(outs)
    assert not want.all() and want.any()
    assert torch.equal(lane_row_flags(outs), want) and torch.equal(lane_row_flags(torch.stack(outs)), want)


def test_kernel_bench_flag_groups():
    """The row-flags groups on a tiny shape: every variant's flags are the reference's, some rows
    flagged (torch impl here; the kernel under the interpreter in the next test)."""
    import kernel_bench as kb

    assert [(s.outputs, s.rows, s.width) for s in kb.FLAG_SHAPES] == [(4, 196, 2048), (1, 130, 2048),
                                                                       (1, 1040, 2048)]
    assert_flag_groups_agree(kb, "torch")


def test_kernel_bench_flag_groups_with_the_kernel(interpreter):
    import kernel_bench as kb

    assert_flag_groups_agree(kb, "triton")


def assert_flag_groups_agree(kb, impl: str) -> None:
    for shape in (kb.FlagShape("tiny", 4, 9, 40), kb.FlagShape("tiny", 1, 5, 33)):
        for group, args, variants in kb._flag_groups(shape, torch.device("cpu"), impl):
            ref = variants[0].fn(*args)
            assert ref.dtype == torch.bool and not ref.all()
            for v in variants:
                assert torch.equal(v.fn(*args), ref), (group, v.name)
            assert all(v.bytes for v in variants)
