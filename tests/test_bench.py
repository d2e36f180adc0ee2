"""``omnienc bench`` on the CPU (tiny configs) and the GEMM floor's shape lists (real configs, no GPU)."""

from __future__ import annotations

import argparse
import json
import math
import time

import pytest
import torch

from omnienc.tools import bench, workloads
from omnienc.tools.floor import audio_chunks_tokens, audio_gemms, gemm_flops, time_gemms, vision_gemms
from omnienc.tools.models import encoder_configs

TINY_GRID = """\
dtype: bfloat16
vision: {patches: [256, 1024], batch: [1, 4]}
audio: {frames: [1000, 2000], batch: [1, 2]}
"""


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="omnienc")
    bench.register(parser.add_subparsers())
    return parser.parse_args(["bench", *argv])


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    """One tiny CPU run of every column on an image, an audio and a raw audio workload, through ``run(args)``."""
    tmp = tmp_path_factory.mktemp("bench")
    (tmp / "grid.yaml").write_text(TINY_GRID)
    out = tmp / "out"
    args = parse("--device", "cpu", "--tiny", "--repeats", "2", "--warmup", "1", "--workloads",
                 "image224,audio10s,raw_audio10s",
                 "--grid", str(tmp / "grid.yaml"), "--out", str(out), "--no-progress")
    rc = args.func(args)
    return rc, out


def test_cpu_run_reports_every_column(cpu_run):
    rc, out = cpu_run
    assert rc == 0
    report = json.loads((out / "bench.json").read_text())
    assert report["errors"] == []
    assert report["columns"] == list(bench.COLUMNS)
    assert list(report["workloads"]) == ["image224", "audio10s", "raw_audio10s"]
    for name, entry in report["workloads"].items():
        cols = bench.COLUMNS if entry["raw"] else [c for c in bench.COLUMNS if c not in bench.RAW_COLUMNS]
        assert set(entry["results"]) == set(cols)
        for col in cols:
            r = entry["results"][col]
            assert r["repeats"] == 2, (name, col, r)
            assert 0 < r["p10_ms"] <= r["median_ms"] <= r["p90_ms"], (name, col, r)
        assert entry["ratios"]["speedup_vs_hf_per_request"] > 0
        assert entry["ratios"]["runtime_over_floor"] > 0
        assert entry["floor_gflop"] > 0
        if entry["raw"]:
            r = entry["results"]
            assert entry["ratios"]["raw_over_ready"] == r["raw_gpu_runtime"]["median_ms"] / r["runtime"]["median_ms"]
        # Both requests fit a bucket of the grid: one replay, no eager fallback.
        stats = entry["runtime_stats"]
        assert sum(s["replays"] for s in stats.values()) == 1
        assert sum(s["fallbacks"] for s in stats.values()) == 0
    meta = report["meta"]
    for key in ("card", "torch", "transformers", "date", "command"):
        assert meta[key], key
    assert set(meta["parity_rel_err"]) == {"vision", "audio"}
    assert all(v < 0.05 for v in meta["parity_rel_err"].values())  # same weights in HF and omnienc
    assert report["capture"]["lanes"] == ["vision", "audio"]


def test_cpu_run_writes_markdown_table(cpu_run):
    _, out = cpu_run
    md = (out / "bench.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| workload"))
    for col in bench.COLUMNS:
        assert (col in header) == (col not in bench.RAW_COLUMNS)
    rows = [line for line in md.splitlines() if line.startswith(("| image224", "| audio10s", "| raw_audio10s"))]
    assert len(rows) == 4  # raw_audio10s: in the main table and in the raw table
    raw_header = next(line for line in md.splitlines() if "GPU preprocessing + runtime / runtime" in line)
    assert rows[-1].count("|") == raw_header.count("|")
    rows = rows[:3]
    assert all(row.count("|") == header.count("|") for row in rows)
    assert "error" not in " ".join(rows)


def test_json_flag_and_column_subset(tmp_path, capsys):
    (tmp_path / "grid.yaml").write_text(TINY_GRID)
    args = parse("--device", "cpu", "--tiny", "--repeats", "2", "--warmup", "0", "--workloads", "audios8x10s",
                 "--columns", "floor,native_eager", "--grid", str(tmp_path / "grid.yaml"), "--json", "--no-progress")
    assert args.func(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["columns"] == ["native_eager", "floor"]  # canonical order
    results = report["workloads"]["audios8x10s"]["results"]
    assert set(results) == {"native_eager", "floor"}
    assert report["workloads"]["audios8x10s"]["audio_tokens"] == 8 * 130


def test_bad_names_are_refused(capsys):
    args = parse("--device", "cpu", "--tiny", "--workloads", "image999")
    assert args.func(args) == 2
    assert "image999" in capsys.readouterr().err


def test_raw_workloads_preprocess_to_their_twins_shapes():
    """Raw media of raw_* workloads preprocess (all requests in one pass) to exactly the grids and
    frame counts of the ready twin; the mix has images, videos and audio."""
    import numpy as np

    from omnienc.preprocess import PreprocessConfig, RawVideo
    from omnienc.runtime import preprocess_requests

    w = workloads.all_workloads()
    for name, twin in workloads.RAW_OF.items():
        items = workloads.raw_items(w[name], np.random.default_rng(), patch=4)
        got = tuple(("vision", tuple(map(tuple, r.grid_thw.tolist()))) if hasattr(r, "grid_thw")
                    else ("audio", tuple(r.feature_lens.tolist()))
                    for r in preprocess_requests(items, config=PreprocessConfig(patch_size=4)))
        assert got == w[twin].requests == w[name].requests
    assert any(isinstance(it, RawVideo) for it in items)


def test_workloads_are_fixed():
    w = workloads.all_workloads()
    assert tuple(w) == workloads.WORKLOADS
    mixed = w["mixed32"]
    assert len(mixed.requests) == 32
    assert mixed.requests == workloads.mixed_requests()  # same seed, same mix
    assert set(mixed.modalities) == {"vision", "audio"}
    assert w["video16x448"].summary()["vision_patches"] == 6272
    assert w["audio30s"].summary()["audio_tokens"] == 390


# --- the floor's GEMM list, real sizes ------------------------------------------------------------


def test_floor_flops_image448_real_config():
    vcfg, _ = encoder_configs(tiny=False)
    n = 28 * 28  # 448x448 px -> 784 patches
    h, mlp, out = vcfg.hidden_size, vcfg.intermediate_size, vcfg.out_hidden_size
    pixels = vcfg.in_channels * vcfg.temporal_patch_size * vcfg.patch_size**2
    merged = h * vcfg.spatial_merge_size**2
    per_block = n * (h * 3 * h + h * h + h * mlp + mlp * h)
    mergers = (len(vcfg.deepstack_visual_indexes) + 1) * (n // 4) * (merged * merged + merged * out)
    expected = 2 * (n * pixels * h + vcfg.depth * per_block + mergers)

    gemms = vision_gemms(vcfg, n)
    assert gemm_flops(gemms) == expected
    assert round(expected / 1e9, 1) == 695.4  # the released sizes: 1536, 1152, 4304, 27 blocks, 4 mergers
    assert len(gemms) == 1 + 27 * 4 + 4 * 2
    assert gemms[0].name == "patch_embed.proj" and gemms[-1].name == "merger.mlp.2"
    # DeepStack mergers follow their block.
    names = [g.name for g in gemms]
    assert names.index("merger_list.0.mlp.0") == names.index("blocks.8.mlp.linear_fc2") + 1


def test_floor_flops_audio10s_real_config():
    _, acfg = encoder_configs(tiny=False)
    chunks, tokens = audio_chunks_tokens([1000])
    assert (chunks, tokens) == (10, 130)
    d, ffn = acfg.d_model, acfg.encoder_ffn_dim
    expected = 2 * (
        chunks * 13 * (acfg.downsample_hidden_size * 16) * d
        + acfg.encoder_layers * tokens * (4 * d * d + 2 * d * ffn)
        + tokens * (d * d + d * acfg.output_dim)
    )
    assert gemm_flops(audio_gemms(acfg, chunks, tokens)) == expected


def test_floor_rejects_partial_merge_window():
    vcfg, _ = encoder_configs(tiny=False)
    with pytest.raises(ValueError, match="multiple of 4"):
        vision_gemms(vcfg, 785)


def test_floor_times_on_cpu():
    vcfg, _ = encoder_configs(tiny=True)
    t = time_gemms(vision_gemms(vcfg, 64), "cpu", repeats=3, warmup=1)
    assert t.repeats == 3 and t.median_ms > 0 and math.isfinite(t.median_ms)


def test_measure_warms_up_fully_when_asked():
    """A slow call stops the warm-up once it took a quarter of the budget; ``full_warmup`` (an
    explicit ``--warmup``) runs every warm-up call, then the timed ones."""
    from omnienc.tools.floor import measure

    calls = []

    def slow():
        calls.append(1)
        time.sleep(0.02)

    t = measure(slow, torch.device("cpu"), repeats=2, warmup=6, budget_s=0.04)
    assert t.warmup == 1 and len(calls) == 1 + t.repeats
    calls.clear()
    t = measure(slow, torch.device("cpu"), repeats=2, warmup=6, budget_s=0.04, full_warmup=True)
    assert t.warmup == 6 and len(calls) == 6 + t.repeats


def test_a_failing_cell_is_reported_not_fatal(tmp_path, monkeypatch):
    def broken(models, inputs):
        raise RuntimeError("CUDA out of memory (simulated)")

    from omnienc.tools import bench_run  # the benchmark's body (``bench`` holds its options)

    monkeypatch.setattr(bench_run, "hf_batched_fn", broken)
    (tmp_path / "grid.yaml").write_text(TINY_GRID)
    args = parse("--device", "cpu", "--tiny", "--repeats", "2", "--warmup", "1", "--workloads", "audio10s",
                 "--columns", "hf_batched,floor", "--grid", str(tmp_path / "grid.yaml"), "--out", str(tmp_path),
                 "--no-progress")
    assert args.func(args) == 1
    report = json.loads((tmp_path / "bench.json").read_text())
    results = report["workloads"]["audio10s"]["results"]
    assert "simulated" in results["hf_batched"]["error"]
    assert results["floor"]["median_ms"] > 0
    assert "simulated" in (tmp_path / "bench.md").read_text()


def test_attn_bench_layouts_reference_and_table(capsys):
    """attn_bench's layouts are the runtime's (bucket-sized where they say so; audio windows of 104),
    its fp32 reference is per-segment attention, and its table renders every outcome."""
    import random

    import torch

    from omnienc.encoders.attention import varlen_attention
    from omnienc.encoders.audio import plan_audio
    import attn_bench

    sizes = {c.name: sum(c.seqlens) for c in attn_bench.CASES}
    assert sizes["vision 720p (1x3680) in 4320 bucket"] == 4320
    assert sizes["vision 8x448 in 6400 bucket"] == 6400 and sizes["vision 2x448 in 2356 bucket"] == 2356
    for frames, case in ((1000, "audio 10s (130 tok)"), (3000, "audio 30s (390 tok)")):
        plan = plan_audio([frames], n_window=50, n_window_infer=800)
        assert tuple(plan.seqlens) == next(c for c in attn_bench.CASES if c.name == case).seqlens

    seqlens = [random.randint(1, 40) for _ in range(3)]
    q, k, v = (torch.randn(sum(seqlens), 2, 8) for _ in range(3))
    cu = torch.tensor([0, *torch.tensor(seqlens).cumsum(0).tolist()], dtype=torch.int32)
    expect = varlen_attention(q, k, v, cu, max(seqlens), seqlens, "sdpa")
    torch.testing.assert_close(attn_bench._reference(q, k, v, seqlens), expect)

    rows = [{"case": "c", "tokens": 7, "results": {
        "a": {"ms": 0.01, "tflops": 3.0, "timed": "graph"}, "b": {"ms": 2.0, "tflops": 0.0, "timed": "eager"},
        "c": {"wrong": True, "max_abs_err": 0.5}, "d": {"error": "x"}, "e": {"skipped": "why"}}}]
    line = attn_bench.markdown(rows).splitlines()[-1]
    assert line == "| c | 7 | 10.0 us (3 TF/s) | 2000.0 us (0 TF/s, eager: not capturable) | WRONG (err 0.5) | error | n/a |"
    uneven = attn_bench.Case("u", 2, 8, (3, 5))
    assert attn_bench._kernel("cudnn_batched", uneven, cu, 5) == "segments differ in length"
    for name in ("fa2_varlen", "cudnn_ragged", "cudnn_batched", "flash_batched"):
        assert callable(attn_bench._kernel(name, attn_bench.Case("e", 2, 8, (4, 4)), cu, 4))
    with pytest.raises(SystemExit):
        attn_bench.main(["--kernels", "fa2_varlen,bogus"])
    assert "unknown kernels ['bogus']" in capsys.readouterr().err


def test_bench_configs_are_the_shared_ones():
    """bench builds its encoders from tools/models.py: the released sizes, and the tests' tiny configs."""
    from conftest import tiny_audio_config, tiny_vision_config

    from omnienc.tools.models import real_configs

    for tiny, expected in ((True, (tiny_vision_config(), tiny_audio_config())), (False, real_configs())):
        got = encoder_configs(tiny=tiny)
        assert [c.to_dict() for c in got] == [c.to_dict() for c in expected]
        assert all(c._attn_implementation == "sdpa" for c in got)


def test_launch_bench_runs_the_replay_path(capsys):
    """``benchmarks/launch_bench`` times ``launch`` over stub graph replays: it runs (it had drifted from
    ``buckets.forward``'s signature unnoticed) and reports each workload."""
    import launch_bench

    # --host-finite: without it the tool stubs the input scan out for the whole process
    launch_bench.main(["--workloads", "image448,audio10s", "--repeats", "3", "--rounds", "1", "--host-finite"])
    out = capsys.readouterr().out
    assert "image448: launch" in out and "audio10s: launch" in out


def test_runs_cell_names_merged_eager_calls():
    """The table's runtime-runs cell counts replays, eager runs (and how many calls merged several of
    them) and fallbacks, over both modalities."""
    from omnienc.tools.report import _replays

    stats = {"vision": {"replays": 2, "eager_runs": 4, "eager_merges": 1, "fallbacks": 0},
             "audio": {"replays": 3, "eager_runs": 0, "eager_merges": 0, "fallbacks": 1}}
    assert _replays({"runtime_stats": stats}) == "5 +4 eager runs (1 merged call) +1 fallbacks"
    stats["vision"]["eager_merges"] = 0
    assert _replays({"runtime_stats": stats}) == "5 +4 eager runs +1 fallbacks"
    assert _replays({}) == "-"
