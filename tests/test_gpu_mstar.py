"""omnienc's M* encoder nodes on a GPU (marked ``gpu``; skipped without CUDA or without M*).

Reduced encoder sizes (tools.models.reduced_configs: the real structure, patch 16, 128 mel bins,
fewer and narrower layers), random bf16 weights in a checkpoint written as M* loads one, the
packaged grid captured when M*'s ``EngineManager`` creates the nodes. Every step runs as M*'s worker
runs it (benchmarks/mstar_harness.py). Parity: each request's outputs against transformers' float32
encoders on the same weights, omnienc's relative error at most 1.5x that of M*'s stock node (bf16,
run by an M* engine the same way), cosine at least 0.999, shapes and dtypes as the stock node's.
benchmarks/mstar_gpu.sh runs these beside the benchmark at real sizes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.gpu
pytest.importorskip("mstar.model.submodule_base", reason="M* (mstar-ai) is not installed")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import mstar_harness  # noqa: E402
from conftest import rel_err  # noqa: E402
from mstar_harness import step, write_checkpoint  # noqa: E402

CUDA = torch.device("cuda")


def cosine(a, b) -> float:
    return torch.nn.functional.cosine_similarity(a.double().flatten(), b.double().flatten(), dim=0).item()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from omnienc.tools.models import reduced_configs

    om = mstar_harness.load()
    vcfg, acfg = reduced_configs()
    vcfg._attn_implementation = acfg._attn_implementation = "sdpa"
    root = tmp_path_factory.mktemp("qwen3_omni")
    device = torch.device("cuda", torch.cuda.current_device())
    hf = write_checkpoint(root, vcfg, acfg, dtype=torch.bfloat16, device=device)
    model = om.Qwen3OmniOmniencModel(checkpoint=str(root), progress=False)
    e = mstar_harness.build_engines(model, device, torch.bfloat16)
    yield dict(om=om, engine=e.omnienc, stock=e.stock, model=model, hf=hf, cfg=(vcfg, acfg), device=device,
               log=e.log, created_s=e.create_s)
    torch.cuda.empty_cache()


def vision(grid, cfg) -> dict:
    """M*'s vision inputs on the GPU: float32 pixels, int64 grid (1-D for one item)."""
    g = torch.tensor(grid, dtype=torch.int64, device=CUDA)
    n = sum(t * h * w for t, h, w in grid)
    width = cfg.in_channels * cfg.temporal_patch_size * cfg.patch_size**2
    return {"pixel_values": [torch.randn(n, width, device=CUDA)], "image_grid_thw": [g[0] if len(grid) == 1 else g]}


def audio(lens, cfg) -> dict:
    return {"audio_features": [torch.randn(cfg.num_mel_bins, sum(lens), device=CUDA)],
            "audio_seqlens": [torch.tensor(lens, dtype=torch.long, device=CUDA)]}


@torch.inference_mode()
def reference(hf, inputs: dict) -> dict:
    hf_vision, hf_audio = hf
    ref = {}
    for rid, x in inputs.items():
        if "pixel_values" in x:
            out = hf_vision(x["pixel_values"][0], grid_thw=x["image_grid_thw"][0].reshape(-1, 3))
            ref[rid] = {"vision_embeds": [out.pooler_output], "deepstack": list(out.deepstack_features)}
        else:
            out = hf_audio(x["audio_features"][0], feature_lens=x["audio_seqlens"][0])
            ref[rid] = {"audio_embeds": [out.last_hidden_state]}
    return ref


def check_parity(out: dict, stock: dict, ref: dict) -> list[str]:
    lines = []
    assert out.keys() == stock.keys() == ref.keys()
    for rid in ref:
        for name, tensors in ref[rid].items():
            assert len(out[rid][name]) == len(stock[rid][name]) == len(tensors), (rid, name)
            for j, r in enumerate(tensors):
                a, s = out[rid][name][j], stock[rid][name][j]
                assert a.shape == s.shape and a.dtype == s.dtype, (rid, name, a.shape, s.shape, a.dtype, s.dtype)
                e_ours, e_stock, c = rel_err(a, r), rel_err(s, r), cosine(a, r)
                lines.append(f"{rid} {name}[{j}]: rel err omnienc {e_ours:.3e} vs stock {e_stock:.3e}, cosine {c:.6f}")
                assert e_ours <= 1.5 * e_stock and c >= 0.999, lines[-1]
    return lines


def test_nodes_match_stock_within_bf16_tolerance(setup):
    vcfg, acfg = setup["cfg"]
    vis = {"image448": vision([[1, 28, 28]], vcfg), "two_images": vision([[1, 14, 20], [1, 8, 8]], vcfg),
           "video": vision([[4, 16, 16]], vcfg), "image720p": vision([[1, 46, 80]], vcfg)}
    aud = {"audio10s": audio([1000], acfg), "two_clips": audio([455, 2600], acfg), "short": audio([37], acfg)}
    for node, walk, inputs in (("vision_encoder", "prefill_vision", vis), ("audio_encoder", "prefill_audio", aud)):
        out, failed = step(setup["engine"], node, walk, inputs)
        ref_out, ref_failed = step(setup["stock"], node, walk, inputs)
        assert not failed and not ref_failed
        for line in check_parity(out, ref_out, reference(setup["hf"], inputs)):
            print(line)


def test_capture_at_load_and_memory_report(setup):
    report = setup["model"].load_reports[setup["device"]]
    print(f"node creation {setup['created_s']:.1f} s; load report {report}")
    assert report["cuda_graphs"] and report["graphs"] > 0
    assert all(b > 0 for b in report["graph_memory_bytes"].values())
    assert report["allocated_bytes"] > report["weights_bytes"] > 0
    assert any("GPU memory held" in m and "graph pool" in m for m in setup["log"])
    nodes = [setup["engine"]._submodules[n].submodule for n in ("vision_encoder", "audio_encoder")]
    assert nodes[0].runtime is nodes[1].runtime and nodes[0].runtime.stats()["captures"] == 1


def test_nonfinite_request_fails_alone_at_check_stop(setup):
    """On CUDA values are checked on the device, per output row, without a host sync: a NaN passes
    ``prepare_inputs`` and its request fails at ``check_stop``; the others of its step are intact."""
    vcfg, _ = setup["cfg"]
    good = {"a": vision([[1, 28, 28]], vcfg), "b": vision([[2, 8, 12]], vcfg)}
    bad = vision([[1, 16, 16]], vcfg)
    bad["pixel_values"][0][7, 3] = float("nan")
    out, failed = step(setup["engine"], "vision_encoder", "prefill_vision", {**good, "bad": bad})
    assert set(failed) == {"bad"} and "request 'bad'" in failed["bad"] and "pixel_values" in failed["bad"]
    ref_out, _ = step(setup["stock"], "vision_encoder", "prefill_vision", good)
    check_parity(out, ref_out, reference(setup["hf"], good))


def test_work_runs_on_the_engines_stream(setup):
    """M*'s GPU thread runs its steps on torch's current stream; the nodes enqueue there and nowhere
    else: behind a long kernel on that stream nothing of theirs has run, and the default stream is idle."""
    from mstar_harness import forward_info

    vcfg, _ = setup["cfg"]
    node = setup["engine"]._submodules["vision_encoder"].submodule
    inputs = vision([[1, 28, 28]], vcfg)
    prepared = node.prepare_inputs("prefill_vision", forward_info("s", "prefill_vision"), inputs)
    from mstar.model.submodule_base import ModelInputsFromEngine

    engine_inputs = ModelInputsFromEngine(["s"], {})
    kwargs = node.preprocess("prefill_vision", engine_inputs, [prepared])
    side = torch.cuda.Stream()
    torch.cuda.synchronize()
    with torch.cuda.stream(side):
        torch.cuda._sleep(200_000_000)  # ~0.1 s or more of one spinning kernel
        out = node.forward_batched("prefill_vision", engine_inputs, **kwargs)["s"]
        done = torch.cuda.Event()
        done.record()
    assert not done.query() and torch.cuda.default_stream().query()
    side.synchronize()
    assert node.check_stop("s", None, out) == set()
    ref = reference(setup["hf"], {"s": inputs})["s"]
    assert cosine(out["vision_embeds"][0], ref["vision_embeds"][0]) >= 0.999


def test_a_repeated_request_replays_its_bucket_graph(setup):
    """The node's default (exact-layout graphs off): every step replays a captured bucket, and
    nothing is captured while the engine serves."""
    vcfg, _ = setup["cfg"]
    runtime = setup["engine"]._submodules["vision_encoder"].submodule.runtime
    runtime.reset_stats()
    for _ in range(4):
        out, failed = step(setup["engine"], "vision_encoder", "prefill_vision", {"r": vision([[1, 30, 40]], vcfg)})
        assert not failed
    s = runtime.stats()
    assert s["replays"] == 4 and s["fallbacks"] == 0 and s["vision"]["exact_captures"] == 0, s
