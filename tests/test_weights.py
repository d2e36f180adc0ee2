"""Checkpoint loading: a synthetic sharded checkpoint, and every strictness / corruption error (config
fields that change the computation, malformed files, weight dtypes and non-finite values)."""

from __future__ import annotations

import json
import random
import re

import pytest
import torch
from conftest import (
    hf_and_native_audio, hf_and_native_vision, random_pixels, rel_err, tiny_audio_config, tiny_vision_config,
)
from safetensors.torch import save_file

from omnienc.encoders import AudioEncoder, CheckpointError, VisionEncoder, WeightLoadError, load_hf_weights
from omnienc.encoders.weights import REQUIRED_CONFIG_FIELDS


def write_checkpoint(root, hf_vision, hf_audio, split_audio=True):
    """Writes config.json, two shards and an index: vision + half the audio in shard 1, the rest in 2,
    plus an unrelated text tensor in its own third shard (which loading must never open)."""
    root.mkdir(parents=True, exist_ok=True)
    vis = {f"thinker.visual.{k}": v.contiguous() for k, v in hf_vision.state_dict().items()}
    aud = {f"thinker.audio_tower.{k}": v.contiguous() for k, v in hf_audio.state_dict().items()}
    aud_keys = sorted(aud)
    half = len(aud_keys) // 2 if split_audio else len(aud_keys)
    shard1 = {**vis, **{k: aud[k] for k in aud_keys[:half]}}
    shard2 = {k: aud[k] for k in aud_keys[half:]}
    shards = {"model-00001-of-00003.safetensors": shard1, "model-00002-of-00003.safetensors": shard2}
    for name, tensors in shards.items():
        save_file(tensors, str(root / name))
    (root / "model-00003-of-00003.safetensors").write_bytes(b"not a safetensors file: never opened")
    weight_map = {k: name for name, tensors in shards.items() for k in tensors}
    weight_map["thinker.model.embed_tokens.weight"] = "model-00003-of-00003.safetensors"
    (root / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    config = {
        "model_type": "qwen3_omni_moe",
        "thinker_config": {
            "vision_config": hf_vision.config.to_dict(),
            "audio_config": hf_audio.config.to_dict(),
        },
    }
    (root / "config.json").write_text(json.dumps(config))
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    hf_v, _ = hf_and_native_vision()
    hf_a, _ = hf_and_native_audio()
    root = write_checkpoint(tmp_path_factory.mktemp("ckpt"), hf_v, hf_a)
    return root, hf_v, hf_a


@torch.no_grad()
def test_from_pretrained_sharded_matches_hf(checkpoint):
    root, hf_v, hf_a = checkpoint
    vis = VisionEncoder.from_pretrained(root, dtype=torch.float32)
    aud = AudioEncoder.from_pretrained(root, dtype=torch.float32)
    grid = [[1, 6, 4], [2, 4, 4]]
    px = random_pixels(grid, hf_v.config)
    ref = hf_v(px, torch.tensor(grid))
    out, ds = vis(px, torch.tensor(grid))
    assert rel_err(out, ref.pooler_output) <= 1e-5
    assert all(rel_err(a, b) <= 1e-5 for a, b in zip(ds, ref.deepstack_features))
    x = torch.randn(hf_a.config.num_mel_bins, 345)
    assert rel_err(aud(x, [345]), hf_a(x, torch.tensor([345])).last_hidden_state) <= 1e-5
    # The config came from the checkpoint, not class defaults.
    assert vis.config.out_hidden_size == hf_v.config.out_hidden_size
    assert aud.config.output_dim == hf_a.config.output_dim


def test_from_pretrained_casts_to_dtype(checkpoint):
    root, hf_v, _ = checkpoint
    vis = VisionEncoder.from_pretrained(root, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in vis.parameters())
    ref = hf_v.state_dict()["blocks.1.attn.qkv.weight"].to(torch.bfloat16)
    assert torch.equal(vis.blocks[1].attn.qkv.weight, ref)


def test_missing_unexpected_and_misshaped_keys_are_named():
    hf_v, native = hf_and_native_vision()
    sd = dict(hf_v.state_dict())
    del sd["blocks.2.mlp.linear_fc1.bias"]
    sd["blocks.0.attn.extra"] = torch.randn(3)
    sd["merger.mlp.2.weight"] = torch.randn(5, 5)
    with pytest.raises(WeightLoadError) as e:
        load_hf_weights(native, sd)
    msg = str(e.value)
    assert "missing keys: blocks.2.mlp.linear_fc1.bias" in msg
    assert "unexpected keys: blocks.0.attn.extra" in msg
    assert "wrong shape: merger.mlp.2.weight is (5, 5)" in msg


def test_misshaped_key_names_its_shard(checkpoint, tmp_path):
    _, hf_v, hf_a = checkpoint
    hf_a2 = type(hf_a)(hf_a.config)
    hf_a2.load_state_dict(hf_a.state_dict())
    with torch.no_grad():
        hf_a2.proj2.weight = torch.nn.Parameter(torch.randn(7, hf_a.config.d_model))
    root = write_checkpoint(tmp_path / "bad", hf_v, hf_a2)
    with pytest.raises(WeightLoadError, match=r"thinker\.audio_tower\.proj2\.weight is \(7, 32\) in .*model-0000[12]"):
        AudioEncoder.from_pretrained(root, dtype=torch.float32)


def test_missing_shard(checkpoint, tmp_path):
    _, hf_v, hf_a = checkpoint
    root = write_checkpoint(tmp_path / "c", hf_v, hf_a)
    (root / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model-00002-of-00003.safetensors: shard file is missing"):
        AudioEncoder.from_pretrained(root, dtype=torch.float32)
    # The vision encoder lives entirely in shard 1 and still loads.
    VisionEncoder.from_pretrained(root, dtype=torch.float32)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_shard(checkpoint, tmp_path, damage):
    _, hf_v, hf_a = checkpoint
    root = write_checkpoint(tmp_path / damage, hf_v, hf_a)
    path = root / "model-00001-of-00003.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00" * 64 + data[64:])
    with pytest.raises(CheckpointError, match="model-00001-of-00003.safetensors"):
        VisionEncoder.from_pretrained(root, dtype=torch.float32)


def test_config_without_thinker_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "something_else"}))
    with pytest.raises(CheckpointError, match="config.json: no 'thinker_config'"):
        VisionEncoder.from_pretrained(tmp_path)


def test_index_pointing_to_absent_key(checkpoint, tmp_path):
    _, hf_v, hf_a = checkpoint
    root = write_checkpoint(tmp_path / "idx", hf_v, hf_a)
    index = json.loads((root / "model.safetensors.index.json").read_text())
    index["weight_map"]["thinker.visual.blocks.0.norm1.extra"] = "model-00002-of-00003.safetensors"
    (root / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"model-00002-of-00003.safetensors: the index says it holds 'thinker\.visual\.blocks\.0\.norm1\.extra'"):
        VisionEncoder.from_pretrained(root, dtype=torch.float32)


def test_single_file_checkpoint(tmp_path):
    hf_v, _ = hf_and_native_vision()
    hf_a, _ = hf_and_native_audio()
    save_file({f"thinker.audio_tower.{k}": v.contiguous() for k, v in hf_a.state_dict().items()}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"thinker_config": {"audio_config": hf_a.config.to_dict()}}))
    aud = AudioEncoder.from_pretrained(tmp_path, dtype=torch.float32)
    x = torch.randn(hf_a.config.num_mel_bins, 120)
    assert rel_err(aud(x, [120]), hf_a(x, torch.tensor([120])).last_hidden_state) <= 1e-5
    with pytest.raises(CheckpointError, match="no 'vision_config'"):
        VisionEncoder.from_pretrained(tmp_path)


def test_audio_state_dict_speaks_hf_names_over_the_stacked_qkv():
    """The audio attention runs one stacked q/k/v GEMM, yet its state_dict has HF's keys (views into
    the stacked tensors): loading writes the stacked weights, and a state_dict round-trips."""
    hf_a, native = hf_and_native_audio()
    own = native.state_dict()
    assert set(own) == set(hf_a.state_dict())
    attn = native.layers[0].self_attn
    d = attn.d_model
    assert own["layers.0.self_attn.k_proj.weight"].data_ptr() == attn.qkv.weight[d].data_ptr()
    for i, part in enumerate(("q_proj", "k_proj", "v_proj")):
        for kind in ("weight", "bias"):
            hf = getattr(getattr(hf_a.layers[0].self_attn, part), kind)
            assert torch.equal(getattr(attn.qkv, kind)[i * d : (i + 1) * d], hf)
    fresh = AudioEncoder(native.config).eval()
    fresh.load_state_dict(own)
    assert torch.equal(fresh.layers[0].self_attn.qkv.weight, attn.qkv.weight)
    feats = torch.randn(native.config.num_mel_bins, 250)
    assert rel_err(fresh(feats, [250]), native(feats, [250])) == 0


# --- config fields, malformed files, weight dtypes and values --------------------------------------

REQUIRED = [(name, key) for name, fields in REQUIRED_CONFIG_FIELDS.items() for key in fields]


def write_config(root, vision_cfg=None, audio_cfg=None):
    """A checkpoint folder holding only config.json (config errors come before any weight is read)."""
    root.mkdir(parents=True, exist_ok=True)
    thinker = {}
    if vision_cfg is not None:
        thinker["vision_config"] = vision_cfg
    if audio_cfg is not None:
        thinker["audio_config"] = audio_cfg
    (root / "config.json").write_text(json.dumps({"model_type": "qwen3_omni_moe", "thinker_config": thinker}))
    return root


def encoder_for(name):
    return VisionEncoder if name == "vision_config" else AudioEncoder


@pytest.mark.parametrize("name, key", REQUIRED, ids=[f"{n}.{k}" for n, k in REQUIRED])
def test_a_missing_computation_field_fails_naming_file_and_field(tmp_path, name, key):
    """transformers would fill the field with its class default and load silently (the bug)."""
    cfg = (tiny_vision_config() if name == "vision_config" else tiny_audio_config()).to_dict()
    del cfg[key]
    root = write_config(tmp_path, **{name.split("_")[0] + "_cfg": cfg})
    with pytest.raises(CheckpointError, match=rf"config\.json: thinker_config\.{name} lacks '{key}'.*copy them"):
        encoder_for(name).from_pretrained(root, dtype=torch.float32)


BAD_FIELDS = {
    "deepstack beyond depth": ("vision_config", "deepstack_visual_indexes", lambda c: [0, c["depth"]], "block indexes"),
    "deepstack repeated": ("vision_config", "deepstack_visual_indexes", lambda c: [1, 1], "distinct"),
    "deepstack not a list": ("vision_config", "deepstack_visual_indexes", lambda c: 8, "block indexes"),
    "depth null": ("vision_config", "depth", lambda c: None, "positive integer"),
    "heads zero": ("vision_config", "num_heads", lambda c: 0, "positive integer"),
    "patch a bool": ("vision_config", "patch_size", lambda c: True, "positive integer"),
    "unknown activation": ("vision_config", "hidden_act", lambda c: "gelu_fancy", "activation name"),
    "n_window a string": ("audio_config", "n_window", lambda c: "50", "positive integer"),
    "n_window_infer float": ("audio_config", "n_window_infer", lambda c: 800.0, "positive integer"),
    "mel bins negative": ("audio_config", "num_mel_bins", lambda c: -128, "positive integer"),
}


@pytest.mark.parametrize("name, key, value, why", BAD_FIELDS.values(), ids=BAD_FIELDS.keys())
def test_a_field_of_the_wrong_kind_fails_naming_it(tmp_path, name, key, value, why):
    cfg = (tiny_vision_config() if name == "vision_config" else tiny_audio_config()).to_dict()
    cfg[key] = value(cfg)
    root = write_config(tmp_path, **{name.split("_")[0] + "_cfg": cfg})
    with pytest.raises(CheckpointError, match=rf"config\.json: thinker_config\.{name}\.{key}: .*{why}"):
        encoder_for(name).from_pretrained(root, dtype=torch.float32)


def test_a_field_the_config_class_refuses_names_the_file(tmp_path):
    cfg = tiny_vision_config().to_dict() | {"initializer_range": "small"}
    root = write_config(tmp_path, vision_cfg=cfg)
    with pytest.raises(CheckpointError, match=r"config\.json: thinker_config\.vision_config is not a valid"):
        VisionEncoder.from_pretrained(root)


MALFORMED_CONFIGS = {
    "a JSON list": (b"[1, 2]", "expected a JSON object, got a list"),
    "not UTF-8": (b'{"thinker_config": "\xff\xfe"}', "not UTF-8"),
    "invalid JSON": (b'{"thinker_config": ', "not valid JSON"),
    "thinker_config a list": (b'{"thinker_config": []}', "no 'thinker_config' object"),
    "vision_config a string": (b'{"thinker_config": {"vision_config": "x"}}', "no 'vision_config' object"),
}


@pytest.mark.parametrize("data, why", MALFORMED_CONFIGS.values(), ids=MALFORMED_CONFIGS.keys())
def test_malformed_config_is_a_checkpoint_error_naming_the_file(tmp_path, data, why):
    (tmp_path / "config.json").write_bytes(data)
    with pytest.raises(CheckpointError, match=f"config.json: .*{why}"):
        VisionEncoder.from_pretrained(tmp_path)


def test_config_json_that_is_a_folder(tmp_path):
    (tmp_path / "config.json").mkdir()
    with pytest.raises(CheckpointError, match="config.json: cannot read config.json"):
        AudioEncoder.from_pretrained(tmp_path)


MALFORMED_INDEXES = {
    "weight_map a list": ({"weight_map": ["a", "b"]}, "needs a 'weight_map' object .*got list"),
    "no weight_map": ({"metadata": {}}, "needs a 'weight_map' object .*got none"),
    "index a list": ([1, 2], "needs a 'weight_map' object"),
    "shard a number": ({"weight_map": {"thinker.visual.pos_embed.weight": 3}}, r"weight_map\['thinker.visual.pos_embed.weight'\] is 3"),
    "shard outside the folder": ({"weight_map": {"x": "../model.safetensors"}}, "expected the name of a shard file"),
}


@pytest.mark.parametrize("index, why", MALFORMED_INDEXES.values(), ids=MALFORMED_INDEXES.keys())
def test_malformed_index_is_a_checkpoint_error_naming_the_file(checkpoint, tmp_path, index, why):
    _, hf_v, hf_a = checkpoint
    root = write_config(tmp_path, hf_v.config.to_dict(), hf_a.config.to_dict())
    (root / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=f"model.safetensors.index.json: malformed index: .*{why}"):
        VisionEncoder.from_pretrained(root, dtype=torch.float32)


def test_index_not_utf8(checkpoint, tmp_path):
    _, hf_v, hf_a = checkpoint
    root = write_config(tmp_path, hf_v.config.to_dict(), hf_a.config.to_dict())
    (root / "model.safetensors.index.json").write_bytes(b'{"weight_map": {"\xff": "a"}}')
    with pytest.raises(CheckpointError, match="model.safetensors.index.json: not UTF-8"):
        AudioEncoder.from_pretrained(root, dtype=torch.float32)


@pytest.mark.parametrize("dtype", [torch.int32, torch.bool, torch.complex64, torch.float8_e4m3fn])
def test_weights_of_the_wrong_dtype_are_named(dtype):
    hf_a, native = hf_and_native_audio()
    sd = dict(hf_a.state_dict())
    key = random.choice(sorted(sd))
    sd[key] = sd[key].to(dtype)
    before = {k: v.clone() for k, v in native.state_dict().items()}
    with pytest.raises(WeightLoadError, match=rf"wrong dtype: {re.escape(key)} is {dtype} in <dict>, expected a floating-point"):
        load_hf_weights(native, sd)
    assert all(torch.equal(v, before[k]) for k, v in native.state_dict().items())  # nothing copied


def test_a_non_tensor_value_is_named():
    hf_v, native = hf_and_native_vision()
    sd = dict(hf_v.state_dict()) | {"blocks.1.norm2.bias": [0.0] * 48}
    with pytest.raises(WeightLoadError, match=r"wrong dtype: blocks\.1\.norm2\.bias is list"):
        load_hf_weights(native, sd)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_are_named_with_their_shard(checkpoint, tmp_path, value):
    _, hf_v, hf_a = checkpoint
    hf_v2 = type(hf_v)(hf_v.config)
    hf_v2.load_state_dict(hf_v.state_dict())
    key = random.choice(sorted(hf_v2.state_dict()))
    with torch.no_grad():
        t = hf_v2.state_dict()[key].view(-1)
        t[random.randrange(t.numel())] = value
    root = write_checkpoint(tmp_path / "nan", hf_v2, hf_a)
    with pytest.raises(WeightLoadError, match=rf"NaN or infinite.*\n  thinker\.visual\.{re.escape(key)} \(in .*model-00001-of-00003"):
        VisionEncoder.from_pretrained(root, dtype=torch.float32)
    AudioEncoder.from_pretrained(root, dtype=torch.float32)  # the other encoder is clean


def test_finite_weights_that_overflow_the_cast_are_named():
    hf_a, native = hf_and_native_audio()
    native = native.to(torch.float16)
    sd = dict(hf_a.state_dict())
    key = random.choice(sorted(k for k in sd if k.endswith("weight")))
    sd[key] = sd[key].clone()
    sd[key].view(-1)[0] = 1e6  # finite in float32, beyond float16's 65504
    with pytest.raises(WeightLoadError, match=rf"{re.escape(key)} \(in <dict>\) \(finite in the file; they overflow torch.float16\)"):
        load_hf_weights(native, sd)
