"""omnienc's encoder nodes inside M* (``mstar-ai`` 0.2.1), on the CPU, tiny configs, float32.

The nodes run through M*'s own engine path: ``EngineManager.build`` asks the model class for them
(``get_submodule``), and each step goes as M*'s worker drives it -- ``Engine.prepare_inputs`` (per
request), ``exec_and_postprocess`` (``can_batch`` -> ``preprocess`` -> ``forward_batched``, then
per-request ``postprocess``), failed requests dropped, then ``check_stop_for_batch``. Every request's
outputs are compared with M*'s stock encoder nodes (transformers' encoders) built by M*'s own code
on the same checkpoint and run by an M* ``Engine`` the same way. Skipped where M* is not installed
(``.ci/run`` installs it); benchmarks/mstar_harness.py says how M*'s Qwen3-Omni module imports here.
"""

from __future__ import annotations

import importlib.resources
import inspect
import sys
from pathlib import Path

import pytest
import torch
import yaml

pytest.importorskip("mstar.model.submodule_base", reason="M* (mstar-ai) is not installed")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import mstar_harness  # noqa: E402
from conftest import random_pixels, rel_err, tiny_audio_config, tiny_vision_config  # noqa: E402
from mstar_harness import forward_info, step, write_checkpoint  # noqa: E402

TOL = 1e-5
# One bucket per modality: packs replay on it, what exceeds it runs as a fallback.
GRID = {"dtype": "float32", "vision": {"patches": [256], "batch": [4]}, "audio": {"frames": [1200], "batch": [4]}}
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def om():
    return mstar_harness.load()


@pytest.fixture(scope="module")
def setup(om, tmp_path_factory):
    """(omnienc's engine, the stock nodes' engine, the model, its load log) on one tiny checkpoint."""
    root = tmp_path_factory.mktemp("qwen3_omni")
    write_checkpoint(root, tiny_vision_config(), tiny_audio_config())
    # room for the one image larger than every bucket (the bound has its own tests)
    model = om.Qwen3OmniOmniencModel(checkpoint=str(root), grid=GRID, progress=False,
                                     runtime={"max_transient_bytes": 2**32})
    e = mstar_harness.build_engines(model, CPU, torch.float32, {"autocast_dtype": torch.float32})
    return e.omnienc, e.stock, model, e.log


def vision_inputs(grid, key: str = "image_grid_thw", one_d: bool = False) -> dict:
    cfg = tiny_vision_config()
    g = torch.tensor(grid, dtype=torch.int64)
    return {"pixel_values": [random_pixels(grid, cfg)], key: [g[0] if one_d else g]}


def audio_inputs(lens) -> dict:
    return {"audio_features": [torch.randn(tiny_audio_config().num_mel_bins, sum(lens))],
            "audio_seqlens": [torch.tensor(lens, dtype=torch.long)]}


def assert_same(outputs: dict, reference: dict) -> None:
    assert outputs.keys() == reference.keys()
    for rid, out in outputs.items():
        ref = reference[rid]
        assert out.keys() == ref.keys(), rid
        for name in out:
            assert len(out[name]) == len(ref[name]), (rid, name)
            for a, b in zip(out[name], ref[name]):
                assert a.shape == b.shape and a.dtype == b.dtype, (rid, name, a.shape, b.shape, a.dtype, b.dtype)
                assert rel_err(a, b) < TOL, (rid, name, rel_err(a, b))


def test_vision_node_matches_stock_node(setup):
    """Several images in one request (2-D grid), a 1-D grid, a video, ``grid_thw``, one beyond the
    grid's bucket: one step, every request's embeds and DeepStack as M*'s stock node gives them."""
    engine, stock, _, _ = setup
    runtime = engine._submodules["vision_encoder"].submodule.runtime
    runtime.reset_stats()
    inputs = {
        "two_images": vision_inputs([[1, 8, 8], [1, 4, 12]]),
        "image_1d": vision_inputs([[1, 12, 8]], one_d=True),
        "video": vision_inputs([[3, 8, 4]], one_d=True),
        "grid_thw_key": vision_inputs([[1, 6, 6]], key="grid_thw"),
        "large": vision_inputs([[1, 20, 16]]),
    }
    out, failed = step(engine, "vision_encoder", "prefill_vision", inputs)
    ref, ref_failed = step(stock, "vision_encoder", "prefill_vision", inputs)
    assert not failed and not ref_failed
    assert_same(out, ref)
    assert all(len(o["deepstack"]) == 3 for o in out.values())
    stats = runtime.stats()["vision"]
    assert stats["requests"] == len(inputs) and stats["replays"] >= 1 and stats["fallbacks"] == 1


def test_audio_node_matches_stock_node(setup):
    engine, stock, _, _ = setup
    inputs = {"clip_137": audio_inputs([137]), "clip_1000": audio_inputs([1000]),
              "two_clips": audio_inputs([400, 55]), "clip_2600": audio_inputs([2600])}
    inputs["clip_0d"] = {"audio_features": [torch.randn(16, 230)], "audio_seqlens": [torch.tensor(230)]}
    out, failed = step(engine, "audio_encoder", "prefill_audio", inputs)
    ref, ref_failed = step(stock, "audio_encoder", "prefill_audio",
                               {**inputs, "clip_0d": {**inputs["clip_0d"], "audio_seqlens": [torch.tensor([230])]}})
    assert not failed and not ref_failed
    assert_same(out, ref)

    # The unbatched entry point (the engine takes it only for a node that cannot batch) is the same.
    from mstar.model.submodule_base import ModelInputsFromEngine

    node = engine._submodules["audio_encoder"].submodule
    prepared = node.prepare_inputs("prefill_audio", forward_info("solo", "prefill_audio"), inputs["two_clips"])
    kwargs = node.preprocess("prefill_audio", None, [prepared])
    single = node.forward("prefill_audio", ModelInputsFromEngine(["solo"], {}), **kwargs)
    assert_same({"two_clips": single}, {"two_clips": ref["two_clips"]})


def test_bad_requests_fail_alone_naming_their_request_id(setup):
    """Bad structure and NaN (seen at validation on the CPU) fail in ``prepare_inputs``; a value that
    goes bad after validation fails at ``check_stop`` from the run's own finiteness check. Every
    other request of the step gets the stock node's outputs."""
    engine, stock, _, _ = setup
    good = {"ok_a": vision_inputs([[1, 8, 8]]), "ok_b": vision_inputs([[2, 4, 8]], one_d=True)}
    nan = vision_inputs([[1, 8, 8]])
    nan["pixel_values"][0][3, 5] = float("nan")
    late = vision_inputs([[1, 4, 4]])
    bad = {"odd_grid": vision_inputs([[1, 7, 8]]), "nan_pixels": nan, "goes_bad": late,
           "no_grid": {"pixel_values": [torch.randn(4, 96)]}}
    out, failed = step(engine, "vision_encoder", "prefill_vision", {**good, **bad},
                           corrupt=lambda: late["pixel_values"][0][0, 0].fill_(float("nan")))
    assert set(failed) == set(bad)
    for rid, error in failed.items():
        assert f"request {rid!r}" in error, error
    assert "grid_thw" in failed["odd_grid"] and "pixel_values" in failed["nan_pixels"]
    assert "pixel_values" in failed["goes_bad"] and "NaN" in failed["goes_bad"]
    ref, _ = step(stock, "vision_encoder", "prefill_vision", good)
    assert_same(out, ref)

    out, failed = step(engine, "audio_encoder", "prefill_audio",
                           {"ok": audio_inputs([300]), "lens_mismatch": {**audio_inputs([100]),
                                                                        "audio_seqlens": [torch.tensor([90])]}})
    assert set(failed) == {"lens_mismatch"} and "feature_lens" in failed["lens_mismatch"]
    assert set(out) == {"ok"}


def test_nodes_share_one_runtime_captured_at_load(setup, om):
    engine, _, model, log = setup
    nodes = {n: engine._submodules[n].submodule for n in ("vision_encoder", "audio_encoder")}
    assert isinstance(nodes["vision_encoder"], om.VisionEncoderNode)
    assert isinstance(nodes["audio_encoder"], om.AudioEncoderNode)
    assert nodes["vision_encoder"].runtime is nodes["audio_encoder"].runtime
    assert all(n.disable_torch_compile and n.disable_autocast for n in nodes.values())
    runtime = nodes["vision_encoder"].runtime
    assert runtime.stats()["captures"] == 1
    report = model.load_reports[CPU]
    assert report["encoders"] == ["vision", "audio"] and report["dtype"] == "float32"
    assert set(report["graph_memory_bytes"]) == {"vision", "audio"}
    assert any("omnienc encoder nodes on cpu" in m and "graph pool" in m for m in log)


def test_registry_and_config_select_the_model_class(om):
    from mstar.model.registry import HF_MODELS, get_model_class

    text = (importlib.resources.files("omnienc.configs") / "mstar_qwen3_omni_omnienc.yaml").read_text()
    config = yaml.safe_load(text)
    assert config["model"] == om.MODEL_NAME == "qwen3_omni_omnienc"
    assert get_model_class(config["model"]) is om.Qwen3OmniOmniencModel
    assert HF_MODELS[config["model"]] == HF_MODELS["qwen3_omni"]
    groups = [set(g["node_names"]) for g in config["node_groups"]]
    assert any({"vision_encoder", "audio_encoder"} <= g for g in groups)  # both share a device's runtime
    options = config.get("model_kwargs") or {}
    assert set(options) <= set(inspect.signature(om.Qwen3OmniOmniencModel).parameters)
    om.EncoderNodesConfig(**{k: v for k, v in options.items() if k != "checkpoint"})


def test_model_pickles_for_m_star_workers(setup, om):
    """M*'s conductor sends the model object to each worker process by pickling it."""
    import pickle

    model = om.Qwen3OmniOmniencModel(checkpoint=setup[2].local_dir, grid=GRID, runtime={"exact_graphs": False})
    copy = pickle.loads(pickle.dumps(model))
    assert type(copy) is om.Qwen3OmniOmniencModel and copy.encoder_nodes == model.encoder_nodes


def test_config_errors_say_what_to_fix(om):
    with pytest.raises(ValueError, match="unknown option.*'no_such_option'"):
        om.EncoderNodesConfig(runtime={"no_such_option": 1})
    with pytest.raises(ValueError, match="model_kwargs.encoders"):
        om.EncoderNodesConfig(encoders=("vision", "text"))
    with pytest.raises(ValueError, match="model_kwargs.grid"):
        om.EncoderNodesConfig(grid=3)
    assert om.EncoderNodesConfig(encoders="audio").encoders == ("audio",)


def test_import_without_mstar_names_the_extra(om, monkeypatch):
    monkeypatch.delitem(sys.modules, om.__name__)
    monkeypatch.setitem(sys.modules, "mstar.model.qwen3_omni.qwen3_omni_model", None)
    with pytest.raises(ImportError, match=r"pip install 'omnienc\[mstar\]'"):
        import omnienc.integrations.mstar  # noqa: F401
