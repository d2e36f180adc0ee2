"""Loading HF checkpoint weights into the native encoders.

The native modules' parameter names equal the HF modules' ``state_dict()`` keys, so loading is a
prefix strip plus a small table of shape adaptations (the Conv3d patch embedding becomes a Linear).
Loading is strict: missing, unexpected or mis-shaped keys raise ``WeightLoadError`` naming them and
the file they came from.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"

# Native key -> adaptation of the HF tensor. Conv3d [out, C, T, P, P] -> Linear [out, C*T*P*P].
ADAPT = {"patch_embed.proj.weight": lambda t: t.reshape(t.shape[0], -1)}


class WeightLoadError(ValueError):
    """A checkpoint does not match the module (names the keys and files involved)."""


class CheckpointError(ValueError):
    """A checkpoint folder is malformed (names the file)."""


def read_thinker_subconfig(checkpoint_dir, name: str) -> dict:
    """``config.json``'s ``thinker_config[name]`` (``vision_config`` or ``audio_config``) as a dict."""
    path = Path(checkpoint_dir) / "config.json"
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no config.json in the checkpoint folder") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    thinker = config.get("thinker_config")
    if not isinstance(thinker, dict):
        raise CheckpointError(f"{path}: no 'thinker_config' object; is this a Qwen3-Omni checkpoint?")
    sub = thinker.get(name)
    if not isinstance(sub, dict):
        raise CheckpointError(f"{path}: 'thinker_config' has no '{name}' object")
    return {k: v for k, v in sub.items() if k not in ("model_type", "transformers_version", "architectures")}


def _open_safetensors(path: Path):
    from safetensors import safe_open

    if not path.is_file():
        raise CheckpointError(f"{path}: shard file is missing")
    try:
        return safe_open(str(path), framework="pt")
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None


def read_checkpoint_tensors(checkpoint_dir, prefix: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Reads every tensor whose name starts with ``prefix``, opening only the shards that hold one.

    Returns:
        (tensors keyed by the name below ``prefix``, the file each came from).
    """
    root = Path(checkpoint_dir)
    index_path = root / INDEX_FILE
    if index_path.is_file():
        try:
            weight_map = json.loads(index_path.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index_path}: malformed index ({e!r}); it needs a 'weight_map' object") from None
        shards: dict[str, list[str]] = {}
        for name, shard in weight_map.items():
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
        WeightLoadError: missing, unexpected or mis-shaped keys (all of them, with their files).
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
    shaped = {}
    for key in set(own) & set(tensors):
        t = tensors[key]
        if key in ADAPT and t.shape != own[key].shape:
            t = ADAPT[key](t)
        shaped[key] = t
    mis_shaped = sorted(k for k, t in shaped.items() if t.shape != own[k].shape)
    if missing or unexpected or mis_shaped:
        lines = [f"checkpoint {where} (prefix '{prefix}') does not match {type(module).__name__}:"]
        if missing:
            lines.append(f"  missing keys: {', '.join(prefix + k for k in missing)}")
        if unexpected:
            lines.append(
                "  unexpected keys: " + ", ".join(f"{prefix + k} (in {origin[k]})" for k in unexpected)
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
