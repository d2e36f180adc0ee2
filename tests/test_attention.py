"""Attention backends on the CPU: which backends are offered where, the ``cudnn`` backend's refusals
without its package or a GPU, ``fastest_backend``'s choice under fake timers, and the ``dense``
backend's runs against per-segment SDPA."""

from __future__ import annotations

import math

import pytest
import torch

from omnienc.encoders.attention import (
    BACKENDS,
    CAPTURABLE,
    DENSE_MAX_RUNS,
    CUDNN_BOUND_STEP,
    CUDNN_SEGMENT_STEP,
    DENSE_RUN_TOKENS,
    available_backends,
    cudnn_available,
    cudnn_plan,
    dense_layout,
    fastest_backend,
    resolve_backend,
    segment_runs,
    varlen_attention,
)

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_available_backends_are_capturable_and_ordered():
    assert "cudnn" in BACKENDS and set(CAPTURABLE) <= set(BACKENDS)
    assert available_backends(CPU, torch.bfloat16, 72) == []
    assert available_backends(CUDA, torch.float32, 72) == []  # float32 runs eagerly (sdpa)
    assert available_backends(CUDA, torch.bfloat16, 12) == []  # FlashAttention needs multiples of 8
    expect = ["varlen", "cudnn"] if cudnn_available() else ["varlen"]
    assert available_backends(CUDA, torch.bfloat16, 72) == expect
    assert available_backends("cuda", torch.float16, 64) == expect


def test_resolve_backend_keeps_its_meaning_and_refuses_cudnn_where_unavailable():
    assert resolve_backend("auto", CPU, torch.float32, 72) == "sdpa"
    assert resolve_backend("auto", CUDA, torch.bfloat16, 72) == "varlen"  # never cudnn: chosen by measurement
    assert resolve_backend("sdpa", CUDA, torch.bfloat16, 72) == "sdpa"
    with pytest.raises(ValueError, match="'cudnn' is unavailable"):
        resolve_backend("cudnn", CPU, torch.bfloat16, 72)
    with pytest.raises(ValueError, match="'cudnn' is unavailable"):
        resolve_backend("cudnn", CUDA, torch.float32, 72)
    with pytest.raises(ValueError, match="unknown attention backend"):
        resolve_backend("cuDNN", CPU, torch.float32, 72)
    q = torch.randn(5, 2, 8)
    with pytest.raises(ValueError, match="cudnn"):
        varlen_attention(q, q, q, torch.tensor([0, 5], dtype=torch.int32), 5, [5], "cudnn")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without a GPU")
def test_cudnn_refusal_says_why():
    assert not cudnn_available()
    with pytest.raises(ValueError, match="no CUDA device"):
        resolve_backend("cudnn", CUDA, torch.bfloat16, 72)


def fake(times: dict[str, float]):
    """run(name) -> a callable naming its backend; timer -> that backend's time."""
    calls = []

    def run(name):
        calls.append(name)
        return lambda: name

    def timer(fn, repeats):
        assert repeats == 7
        return times[fn()]

    return run, timer, calls


def test_fastest_backend_picks_the_fastest_and_reports_all():
    run, timer, calls = fake({"varlen": 0.30, "cudnn": 0.21})
    best, times = fastest_backend(run, ["varlen", "cudnn"], repeats=7, timer=timer)
    assert best == "cudnn" and times == {"varlen": 0.30, "cudnn": 0.21} and calls == ["varlen", "cudnn"]
    run, timer, _ = fake({"varlen": 0.02, "cudnn": 0.05})
    assert fastest_backend(run, ["varlen", "cudnn"], repeats=7, timer=timer)[0] == "varlen"


def test_fastest_backend_ties_go_to_the_preferred_and_one_candidate_is_timed_too():
    run, timer, _ = fake({"varlen": 0.1, "cudnn": 0.1})
    assert fastest_backend(run, ["varlen", "cudnn"], repeats=7, timer=timer)[0] == "varlen"
    assert fastest_backend(run, ["cudnn", "varlen"], repeats=7, timer=timer)[0] == "cudnn"
    assert fastest_backend(run, ["varlen"], repeats=7, timer=timer) == ("varlen", {"varlen": 0.1})


def test_fastest_backend_skips_a_failing_candidate_with_a_warning():
    run, timer, _ = fake({"varlen": 0.3})

    def flaky(name):
        if name == "cudnn":
            raise RuntimeError("capture failed")
        return run(name)

    with pytest.warns(RuntimeWarning, match="'cudnn' failed .*capture failed"):
        best, times = fastest_backend(flaky, ["cudnn", "varlen"], repeats=7, timer=timer)
    assert best == "varlen" and times["cudnn"] == math.inf and times["varlen"] == 0.3

    def broken(name):
        raise RuntimeError("no")

    with pytest.warns(RuntimeWarning), pytest.raises(RuntimeError, match="every candidate"):
        fastest_backend(broken, ["varlen", "cudnn"], repeats=7, timer=timer)
    with pytest.raises(ValueError, match="at least one"):
        fastest_backend(run, [], timer=timer)


def test_attn_bench_cudnn_column_says_why_it_is_absent():
    import attn_bench

    assert "cudnn" in attn_bench.KERNELS and attn_bench.KERNELS[-1] == "cudnn_ragged"
    fn = attn_bench._kernel("cudnn", attn_bench.Case("e", 2, 8, (4, 4)), torch.tensor([0, 4, 8]), 4)
    assert callable(fn) if cudnn_available() else fn == "nvidia-cudnn-frontend not importable"


# --- dense: runs of equal-length segments ------------------------------------------------------


@pytest.mark.parametrize("seqlens,runs", [
    ((784,), [(1, 784)]),
    ((784, 784, 0, 784, 196), [(3, 784), (1, 196)]),
    ((0, 0), []),
    ((5, 7, 5), [(1, 5), (1, 7), (1, 5)]),
    ((3520,), [(1, 3520)]),
])
def test_segment_runs(seqlens, runs):
    assert segment_runs(seqlens) == runs


def test_dense_layout_wants_few_long_runs():
    assert dense_layout((3520,)) and dense_layout((784,) * 8) and dense_layout((784,) * 8 + (0,) * 3)
    assert not dense_layout((104, 26))  # audio windows: short
    assert not dense_layout((784, 100))  # a short segment
    assert not dense_layout(tuple(range(300, 300 + DENSE_MAX_RUNS + 1)))  # too many runs
    big = tuple(range(2000, 2000 + 2 * DENSE_MAX_RUNS))  # a big call: one run per DENSE_RUN_TOKENS tokens
    assert dense_layout(big) and not dense_layout(big, max_runs=DENSE_MAX_RUNS)
    assert not dense_layout(big + tuple(range(128, 128 + sum(big) // DENSE_RUN_TOKENS)))
    assert not dense_layout(())
    assert dense_layout((784, 100), min_seqlen=100)


@pytest.mark.parametrize("seqlens", [(9,), (6, 6, 6), (6, 6, 0, 6, 4, 4, 11), (0, 3, 0, 3, 5)])
def test_dense_matches_per_segment_sdpa(seqlens):
    g = torch.Generator().manual_seed(sum(seqlens))
    qkv = torch.randn(sum(seqlens), 3, 2, 8, generator=g)
    q, k, v = qkv.unbind(1)  # strided views, as the encoders pass them
    cu = torch.tensor([0, *torch.tensor(seqlens).cumsum(0).tolist()], dtype=torch.int32)
    ref = varlen_attention(q, k, v, cu, max(seqlens), seqlens, "sdpa")
    out = varlen_attention(q, k, v, cu, max(seqlens), seqlens, "dense")
    assert out.shape == q.shape
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="add up to"):
        varlen_attention(q, k, v, cu, max(seqlens), (*seqlens, 1), "dense")
    with pytest.raises(ValueError, match="'dense' attention backend needs the segment lengths"):
        varlen_attention(q, k, v, cu, max(seqlens), None, "dense")


@pytest.mark.parametrize("widths", [(3,), (2, 2, 1, 5, 3), tuple(range(1, 2 * CUDNN_SEGMENT_STEP + 2))])
def test_cudnn_plan_rounds_the_graph_key_and_keeps_the_result(widths):
    """``cudnn_plan`` pads with zero-length segments to a multiple of CUDNN_SEGMENT_STEP and rounds the
    bound up to a multiple of CUDNN_BOUND_STEP; the segments, so the attention, stay the same."""
    from omnienc.encoders.vision import plan_vision

    plan = plan_vision([(1, 2, 2 * w) for w in widths], 2, 16)  # one frame of 2 x 2w patches each
    keyed = cudnn_plan(plan)
    n, count = len(plan.seqlens), len(keyed.seqlens)
    assert count % CUDNN_SEGMENT_STEP == 0 and n <= count < n + CUDNN_SEGMENT_STEP
    assert keyed.seqlens[:n] == plan.seqlens and not any(keyed.seqlens[n:])
    assert keyed.max_seqlen % CUDNN_BOUND_STEP == 0 and plan.max_seqlen <= keyed.max_seqlen < plan.max_seqlen + CUDNN_BOUND_STEP
    assert keyed.cu_seqlens.dtype == torch.int32
    assert keyed.cu_seqlens.tolist() == [0, *torch.tensor(keyed.seqlens).cumsum(0).tolist()]
    assert plan.cu_seqlens.shape[0] == n + 1  # the plan given is unchanged
    torch.testing.assert_close(keyed.pos_index, plan.pos_index, rtol=0, atol=0)
    g = torch.Generator().manual_seed(len(widths))
    q, k, v = torch.randn(3, plan.num_tokens, 2, 8, generator=g).unbind(0)
    ref = varlen_attention(q, k, v, plan.cu_seqlens, plan.max_seqlen, plan.seqlens, "sdpa")
    out = varlen_attention(q, k, v, keyed.cu_seqlens, keyed.max_seqlen, keyed.seqlens, "sdpa")
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
