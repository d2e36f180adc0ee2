"""Loading HF checkpoint weights into the native encoders.

The native modules' parameter names equal the HF modules' ``state_dict()`` keys, so loading is a
prefix strip plus a small table of shape adaptations (the Conv3d patch embedding becomes a Linear).
Loading is strict: missing, unexpected, mis-typed or mis-shaped keys and non-finite weights raise
``WeightLoadError`` naming them and the file they came from; a malformed ``config.json`` or index, or
a config without a field that changes the computation (``REQUIRED_CONFIG_FIELDS``), raises
``CheckpointError`` naming the file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from .block import ACTIVATIONS

def _hf_activations():
    """transformers' activation table, imported only for a name not in ``ACTIVATIONS``."""
    from transformers.activations import ACT2FN

    return ACT2FN


INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"

# Native key -> adaptation of the HF tensor. Conv3d [out, C, T, P, P] -> Linear [out, C*T*P*P].
ADAPT = {"patch_embed.proj.weight": lambda t: t.reshape(t.shape[0], -1)}


# The fields of each encoder config that change what the encoder computes. transformers' config
# classes fill a missing field with their class default silently (a config without
# ``deepstack_visual_indexes`` loads with taps [8, 16, 24] whatever the depth; one without
# ``n_window_infer`` with other attention windows), so each must be stated in ``config.json``.
# Not listed: vision ``rope_parameters`` (the released config leaves it out; theta 10000 in both
# implementations) and audio ``max_source_positions`` (only the table's first 13 rows are used).
POSITIVE_INT, NAME, LAYER_LIST = "a positive integer", "an activation name", "a list of block indexes"
REQUIRED_CONFIG_FIELDS = {
    "vision_config": {
        "depth": POSITIVE_INT, "hidden_size": POSITIVE_INT, "intermediate_size": POSITIVE_INT,
        "num_heads": POSITIVE_INT, "in_channels": POSITIVE_INT, "patch_size": POSITIVE_INT,
        "temporal_patch_size": POSITIVE_INT, "spatial_merge_size": POSITIVE_INT,
        "out_hidden_size": POSITIVE_INT, "num_position_embeddings": POSITIVE_INT,
        "hidden_act": NAME, "deepstack_visual_indexes": LAYER_LIST,
    },
    "audio_config": {
        "num_mel_bins": POSITIVE_INT, "encoder_layers": POSITIVE_INT, "encoder_attention_heads": POSITIVE_INT,
        "encoder_ffn_dim": POSITIVE_INT, "d_model": POSITIVE_INT, "output_dim": POSITIVE_INT,
        "downsample_hidden_size": POSITIVE_INT, "n_window": POSITIVE_INT, "n_window_infer": POSITIVE_INT,
        "activation_function": NAME,
    },
}
# Checkpoint tensor dtypes that load by a plain cast (float8 needs its scales; ints are not weights).
SOURCE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class WeightLoadError(ValueError):
    """A checkpoint does not match the module (names the keys and files involved)."""


class CheckpointError(ValueError):
    """A checkpoint folder is malformed (names the file)."""


def read_json(path: Path, what: str):
    """Parses the JSON file ``path``; every failure is a ``CheckpointError`` naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no {what} in the checkpoint folder") from None
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path}: not UTF-8 text ({e}); re-save the file as UTF-8 JSON") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e}); fix the syntax") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read {what} ({e})") from None


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _field_problem(value, kind: str, config: dict) -> str | None:
    """Why ``value`` is not of ``kind`` (see ``REQUIRED_CONFIG_FIELDS``), or None."""
    if kind == POSITIVE_INT:
        ok = _is_int(value) and value >= 1
    elif kind == NAME:
        ok = isinstance(value, str) and (value in ACTIVATIONS or value in _hf_activations())
    else:  # LAYER_LIST: distinct blocks of this encoder ("depth" is checked before)
        depth = config["depth"]
        ok = (isinstance(value, list) and all(_is_int(i) and 0 <= i < depth for i in value)
              and len(set(value)) == len(value))
        if not ok:
            return f"{value!r} is not a list of distinct block indexes in [0, depth={depth})"
    return None if ok else f"{value!r} is not {kind}"


def read_thinker_subconfig(checkpoint_dir, name: str) -> dict:
    """``config.json``'s ``thinker_config[name]`` (``vision_config`` or ``audio_config``) as a dict.

    Raises:
        CheckpointError: naming ``config.json``: unreadable, not a JSON object, no such sub-config,
            or a field of ``REQUIRED_CONFIG_FIELDS[name]`` missing or of the wrong kind.
    """
    path = Path(checkpoint_dir) / "config.json"
    config = read_json(path, "config.json")
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got a {type(config).__name__}")
    thinker = config.get("thinker_config")
    if not isinstance(thinker, dict):
        raise CheckpointError(f"{path}: no 'thinker_config' object; is this a Qwen3-Omni checkpoint?")
    sub = thinker.get(name)
    if not isinstance(sub, dict):
        raise CheckpointError(f"{path}: 'thinker_config' has no '{name}' object")
    required = REQUIRED_CONFIG_FIELDS.get(name, {})
    missing = [k for k in required if k not in sub]
    if missing:
        raise CheckpointError(
            f"{path}: thinker_config.{name} lacks {', '.join(repr(k) for k in missing)}; these fields change "
            "what the encoder computes and have no safe default: copy them from the released checkpoint's config.json"
        )
    for key, kind in required.items():
        problem = _field_problem(sub[key], kind, sub)
        if problem:
            raise CheckpointError(f"{path}: thinker_config.{name}.{key}: {problem}")
    return {k: v for k, v in sub.items() if k not in ("model_type", "transformers_version", "architectures")}


def read_encoder_config(checkpoint_dir, name: str, config_class):
    """``config_class`` (a transformers encoder config) built from ``thinker_config[name]``.

    Raises:
        CheckpointError: naming ``config.json``: see ``read_thinker_subconfig``, or a field that the
            config class refuses.
    """
    sub = read_thinker_subconfig(checkpoint_dir, name)
    try:
        return config_class(**sub)
    except Exception as e:  # transformers raises several types for a field of the wrong type
        path = Path(checkpoint_dir) / "config.json"
        raise CheckpointError(f"{path}: thinker_config.{name} is not a valid {config_class.__name__} ({e})") from e


def _open_safetensors(path: Path):
    from safetensors import safe_open

    if not path.is_file():
        raise CheckpointError(f"{path}: shard file is missing")
    try:
        return safe_open(str(path), framework="pt")
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None


def _read_index(path: Path) -> dict[str, str]:
    """The ``weight_map`` of a sharded checkpoint's index: tensor name -> shard file in the folder."""
    index = read_json(path, INDEX_FILE)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict):
        got = type(weight_map).__name__ if isinstance(index, dict) and "weight_map" in index else "none"
        raise CheckpointError(
            f"{path}: malformed index: it needs a 'weight_map' object of tensor name -> shard file (got {got})"
        )
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or not shard or Path(shard).is_absolute() or ".." in Path(shard).parts:
            raise CheckpointError(
                f"{path}: malformed index: weight_map['{name}'] is {shard!r}; expected the name of a shard "
                "file in the checkpoint folder"
            )
    return weight_map


def read_checkpoint_tensors(checkpoint_dir, prefix: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Reads every tensor whose name starts with ``prefix``, opening only the shards that hold one.

    Returns:
        (tensors keyed by the name below ``prefix``, the file each came from).
    """
    root = Path(checkpoint_dir)
    index_path = root / INDEX_FILE
    if index_path.is_file():
        shards: dict[str, list[str]] = {}
        for name, shard in _read_index(index_path).items():
            if name.startswith(prefix):
                shards.setdefault(shard, []).append(name)
    elif (root / SINGLE_FILE).is_file():
        shards = {SINGLE_FILE: None}
    else:
        raise CheckpointError(f"{root}: neither {INDEX_FILE} nor {SINGLE_FILE} found")
    tensors, origin = {}, {}
    for shard, names in shards.items():
        path = root / shard
        f = _open_safetensors(path)
        try:
            available = set(f.keys())
            wanted = names if names is not None else [k for k in available if k.startswith(prefix)]
            for name in wanted:
                if name not in available:
                    raise CheckpointError(f"{path}: the index says it holds '{name}', but it does not")
                try:
                    tensors[name[len(prefix) :]] = f.get_tensor(name)
                except Exception as e:  # safetensors raises several types on truncated data
                    raise CheckpointError(f"{path}: cannot read tensor '{name}' ({e})") from None
                origin[name[len(prefix) :]] = str(path)
        finally:
            del f
    return tensors, origin


def load_hf_weights(module: nn.Module, source, prefix: str = "") -> None:
    """Copies HF weights into ``module`` in place, casting to each parameter's dtype and device.

    Args:
        module: a native encoder (its ``state_dict()`` keys are HF's, see ``ADAPT``).
        source: a checkpoint folder (``model.safetensors`` or shards with an index; only shards
            holding ``prefix`` are read) or a mapping of names to tensors.
        prefix: the HF name prefix of the encoder (``thinker.visual.``, ``thinker.audio_tower.``).

    Raises:
        WeightLoadError: missing, unexpected, mis-typed (not float16/bfloat16/float32/float64) or
            mis-shaped keys (all of them, with their files; raised before anything is copied), or
            weights holding NaN or infinite values after the cast (checked once, after the copy: the
            module must not be used then).
        CheckpointError: unreadable or inconsistent checkpoint files.
    """
    if isinstance(source, Mapping):
        tensors = {k[len(prefix) :]: v for k, v in source.items() if k.startswith(prefix)}
        origin = dict.fromkeys(tensors, "<dict>")
        where = "the given dict"
    else:
        tensors, origin = read_checkpoint_tensors(source, prefix)
        where = str(source)
    own = module.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    mis_typed = sorted(k for k in set(own) & set(tensors) if not _loadable(tensors[k]))
    shaped = {}
    for key in set(own) & set(tensors) - set(mis_typed):
        t = tensors[key]
        if key in ADAPT and t.shape != own[key].shape:
            t = ADAPT[key](t)
        shaped[key] = t
    mis_shaped = sorted(k for k, t in shaped.items() if t.shape != own[k].shape)
    if missing or unexpected or mis_typed or mis_shaped:
        lines = [f"checkpoint {where} (prefix '{prefix}') does not match {type(module).__name__}:"]
        if missing:
            lines.append(f"  missing keys: {', '.join(prefix + k for k in missing)}")
        if unexpected:
            lines.append(
                "  unexpected keys: " + ", ".join(f"{prefix + k} (in {origin[k]})" for k in unexpected)
            )
        for k in mis_typed:
            t = tensors[k]
            kind = t.dtype if isinstance(t, torch.Tensor) else type(t).__name__
            lines.append(
                f"  wrong dtype: {prefix + k} is {kind} in {origin[k]}, expected a floating-point tensor "
                "(float16, bfloat16, float32 or float64; a float8 checkpoint needs its scales: dequantize it first)"
            )
        for k in mis_shaped:
            lines.append(
                f"  wrong shape: {prefix + k} is {tuple(tensors[k].shape)} in {origin[k]}, "
                f"expected {tuple(own[k].shape)}"
            )
        raise WeightLoadError("\n".join(lines))
    with torch.no_grad():
        for key, t in shaped.items():
            own[key].copy_(t)
    bad = _non_finite({k: own[k] for k in shaped})
    if bad:
        lines = [f"checkpoint {where} (prefix '{prefix}'): weights hold NaN or infinite values; "
                 f"{type(module).__name__} is not usable (re-download or re-convert the checkpoint):"]
        for k in bad:
            cast = f" (finite in the file; they overflow {own[k].dtype})" if not _non_finite({k: tensors[k]}) else ""
            lines.append(f"  {prefix + k} (in {origin[k]}){cast}")
        raise WeightLoadError("\n".join(lines))


def _loadable(t) -> bool:
    """Whether ``t`` is a tensor of a dtype that loads by a plain cast (``SOURCE_DTYPES``)."""
    return isinstance(t, torch.Tensor) and t.dtype in SOURCE_DTYPES


def _non_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """The keys of ``tensors`` holding NaN or infinite values: one reduction per tensor and one host
    sync per device."""
    flags: dict[torch.device, list[tuple[str, torch.Tensor]]] = {}
    for k, t in tensors.items():
        flags.setdefault(t.device, []).append((k, torch.isfinite(t).all()))
    bad = []
    for pairs in flags.values():
        ok = torch.stack([f for _, f in pairs]).cpu().tolist()
        bad += [k for (k, _), good in zip(pairs, ok) if not good]
    return sorted(bad)
