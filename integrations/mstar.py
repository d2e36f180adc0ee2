"""omnienc's encoders as M*'s Qwen3-Omni encoder nodes, batched across requests.

M* (``mstar-ai`` 0.2.1) runs Qwen3-Omni's walks ``prefill_vision`` and ``prefill_audio`` as
Sequential(encoder node -> Thinker). Its stock nodes wrap transformers' encoders and run one request
per call. ``VisionEncoderNode`` and ``AudioEncoderNode`` take the same inputs and return the same
outputs, but batch every request of an engine step into one ``EncoderRuntime.launch`` (bucket graph
replays, eager runs). Both nodes of a device share one runtime: one capture,
one memory pool.

How the engine drives a node (``mstar/engine/engine.py``) and where each failure surfaces:

- ``prepare_inputs``, per request: the request's structure is validated on the host (on the CPU its
  values must be finite too); a bad request raises a ``ValueError`` naming its request id, and M*
  fails that request alone before any work.
- ``can_batch`` (always) -> ``preprocess`` (the step's requests) -> ``forward_batched``: one
  ``launch`` on the current stream (the engine's), outputs returned without waiting for the GPU.
- ``postprocess``, per request: a request whose run failed while being enqueued raises there.
- ``check_stop``, per request, after the worker has waited for the step: a request whose output is
  not finite (CUDA checks every output row on the device) raises there. M*'s worker fails such a
  request alone; the others of the step keep their outputs.

``Qwen3OmniOmniencModel`` is M*'s ``Qwen3OmniModel`` with these nodes, loaded from the same
checkpoint by omnienc's strict loader and captured when the first node is created. Importing this
module registers it in M*'s model registry as ``qwen3_omni_omnienc``; ``python -m
omnienc.integrations.mstar --config omnienc/configs/mstar_qwen3_omni_omnienc.yaml`` serves it with
M*'s API server (docs/MSTAR.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

try:
    from mstar.model import registry as _registry
    from mstar.model.qwen3_omni.qwen3_omni_model import Qwen3OmniModel
    from mstar.model.submodule_base import ModelInputsFromEngine, NodeInputs, NodeSubmodule
except ImportError as _error:
    raise ImportError(
        "omnienc.integrations.mstar needs M* (mstar-ai 0.2.1) with its Qwen3-Omni dependencies: "
        f"pip install 'omnienc[mstar]' (could not import {_error.name or _error})") from _error

from omnienc.runtime import AudioRequest, BucketGrid, EncoderRuntime, RuntimeConfig, VisionRequest

logger = logging.getLogger(__name__)

MODEL_NAME = "qwen3_omni_omnienc"
_MODULE = "omnienc.integrations.mstar"  # not __name__: this file also runs as __main__ / __mp_main__
_BATCH_KEY = "omnienc_batch"  # per-request state: (Batch, index) until check_stop has read it


def _rename_request(message: str, rid: str, node: str) -> str:
    """The runtime names a request by its index in one launch; M* knows it by its request id."""
    named, n = re.subn(r"^request \d+ \((\w+)\)", f"request {rid!r} ({node}, \\1)", message)
    return named if n else f"request {rid!r} ({node}): {message}"


def _batch_error(error: BaseException, rid: str, node: str) -> Exception:
    message = _rename_request(str(error), rid, node)
    return ValueError(message) if isinstance(error, ValueError) else RuntimeError(message)


class _EncoderNode(NodeSubmodule):
    """What both nodes share: one ``EncoderRuntime`` launch per engine step, failures per request."""

    # The runtime captures its own CUDA graphs; torch.compile around its launch would trace host
    # planning and Python dispatch, not the graphs.
    disable_torch_compile = True
    # The encoders run in the dtype they were loaded in (graphs were captured so): the engine then
    # neither casts this node nor wraps it in autocast.
    disable_autocast = True
    node_name = ""

    def __init__(self, runtime: EncoderRuntime):
        super().__init__()
        self.runtime = runtime  # not a module: both nodes hold the same one, and it owns the encoders

    def get_device(self) -> torch.device:
        return self.runtime.device

    def _request(self, rid: str, inputs) -> object:
        raise NotImplementedError

    def _outputs(self, output) -> dict[str, list[torch.Tensor]]:
        raise NotImplementedError

    def prepare_inputs(self, graph_walk: str, fwd_info, inputs, **kwargs) -> NodeInputs:
        rid = fwd_info.request_id
        request = self._request(rid, inputs)
        try:
            # Host metadata (reading a grid or lengths held on the GPU waits for it, as ``launch``
            # would); kept so that ``launch`` does not validate again.
            shape = self.runtime.validate([request])[0]
        except ValueError as e:
            raise ValueError(_rename_request(str(e), rid, self.node_name)) from None
        return NodeInputs(kwargs={"request": request, "shape": shape})

    def can_batch(self, batch, model_inputs: list[NodeInputs]) -> bool:
        return True

    def preprocess(self, graph_walk: str, engine_inputs: ModelInputsFromEngine,
                   inputs: list[NodeInputs]) -> dict:
        return {"requests": [i.kwargs["request"] for i in inputs], "shapes": [i.kwargs["shape"] for i in inputs]}

    def forward_batched(self, graph_walk: str, engine_inputs: ModelInputsFromEngine,
                        requests: list, shapes: list) -> dict[str, dict[str, list[torch.Tensor]]]:
        """One launch for the step's requests; per request id its outputs (empty where its run failed
        while enqueuing: ``postprocess`` then raises its error)."""
        rids = engine_inputs.request_ids
        if len(rids) != len(requests):
            raise ValueError(f"{self.node_name}: {len(requests)} requests for {len(rids)} request ids")
        batch = self.runtime.launch(requests, shapes=shapes)
        out = {}
        for i, (rid, output) in enumerate(zip(rids, batch.outputs)):
            self.request_state(rid).add(_BATCH_KEY, (batch, i))
            out[rid] = {} if output is None else self._outputs(output)
        return out

    def forward(self, graph_walk: str, engine_inputs: ModelInputsFromEngine, requests: list,
                shapes: list) -> dict[str, list[torch.Tensor]]:
        """One request (the engine's unbatched path): the same launch."""
        (rid,) = engine_inputs.request_ids
        return self.forward_batched(graph_walk, engine_inputs, requests, shapes)[rid]

    def postprocess(self, request_id: str, request_info, outputs: dict, inputs: NodeInputs | None = None,
                    **kwargs) -> None:
        if outputs:
            return
        state = self.request_states.get(request_id)
        held = state.get(_BATCH_KEY) if state is not None else None
        if held is None:
            raise RuntimeError(f"request {request_id!r} ({self.node_name}): no output and no launch recorded")
        state.remove(_BATCH_KEY)
        batch, i = held
        # Rare path: the run failed while being enqueued; its error is read with the batch's results.
        raise _batch_error(batch.results()[i], request_id, self.node_name)

    def check_stop(self, request_id: str, request_info, outputs: dict) -> set[str]:
        """Runs after M*'s worker waited for the step, so reading the batch's finiteness flags does
        not hold the GPU thread; a request whose output is not finite raises (M* fails it alone)."""
        state = self.request_states.get(request_id)
        held = state.get(_BATCH_KEY) if state is not None else None
        if held is not None:
            state.remove(_BATCH_KEY)  # the batch is released once each of its requests was read
            batch, i = held
            result = batch.results()[i]
            if isinstance(result, BaseException):
                raise _batch_error(result, request_id, self.node_name)
        return set()


def _one(inputs, name: str, rid: str, node: str):
    """The first tensor M*'s walk hands under ``name`` (None when absent)."""
    values = inputs.get(name)
    if values is None:
        return None
    if not isinstance(values, (list, tuple)) or len(values) != 1:
        raise ValueError(f"request {rid!r} ({node}): input '{name}' must be a list of one tensor")
    return values[0]


class VisionEncoderNode(_EncoderNode):
    """M*'s ``vision_encoder`` node: ``pixel_values [N, C*Tp*P*P]`` and ``image_grid_thw`` (or
    ``grid_thw``), ``[3]`` or ``[n, 3]`` -> ``{"vision_embeds": [[N/4, D]], "deepstack": [3 x [N/4, D]]}``."""

    node_name = "vision_encoder"

    def _request(self, rid: str, inputs) -> VisionRequest:
        pixel_values = _one(inputs, "pixel_values", rid, self.node_name)
        grid = _one(inputs, "image_grid_thw", rid, self.node_name)
        if grid is None:
            grid = _one(inputs, "grid_thw", rid, self.node_name)
        if pixel_values is None or grid is None:
            missing = "pixel_values" if pixel_values is None else "image_grid_thw (or grid_thw)"
            raise ValueError(f"request {rid!r} ({self.node_name}): input '{missing}' is missing")
        if isinstance(grid, torch.Tensor) and grid.dim() == 1:
            grid = grid.unsqueeze(0)  # one item, as M*'s process_prompt hands it
        return VisionRequest(pixel_values, grid)

    def _outputs(self, output) -> dict[str, list[torch.Tensor]]:
        return {"vision_embeds": [output.embeds], "deepstack": list(output.deepstack)}


class AudioEncoderNode(_EncoderNode):
    """M*'s ``audio_encoder`` node: ``audio_features [mel, T]`` and ``audio_seqlens [n]`` ->
    ``{"audio_embeds": [[sum L, D]]}``."""

    node_name = "audio_encoder"

    def _request(self, rid: str, inputs) -> AudioRequest:
        features = _one(inputs, "audio_features", rid, self.node_name)
        lens = _one(inputs, "audio_seqlens", rid, self.node_name)
        if features is None or lens is None:
            missing = "audio_features" if features is None else "audio_seqlens"
            raise ValueError(f"request {rid!r} ({self.node_name}): input '{missing}' is missing")
        if isinstance(lens, torch.Tensor) and lens.dim() == 0:
            lens = lens.reshape(1)
        return AudioRequest(features, lens)

    def _outputs(self, output) -> dict[str, list[torch.Tensor]]:
        return {"audio_embeds": [output.embeds]}


# --- the model class -----------------------------------------------------------------------------

_NODES = {"vision_encoder": ("vision", VisionEncoderNode), "audio_encoder": ("audio", AudioEncoderNode)}
_RUNTIME_OPTIONS = frozenset(f.name for f in dataclasses.fields(RuntimeConfig))


@dataclass(frozen=True)
class EncoderNodesConfig:
    """The encoder nodes' options, from the M* config's ``model_kwargs``.

    Attributes:
        grid: the bucket grid: a YAML path, a mapping (``BucketGrid.from_dict``), a ``BucketGrid``,
            or None for the packaged ``configs/qwen3_omni.yaml``.
        runtime: ``RuntimeConfig`` fields (``attention``, ``exact_graphs``, ``max_transient_bytes``, ...),
            validated here; kept as that ``RuntimeConfig``.
        encoders: which encoders a device's runtime holds (both nodes of a device share it).
        progress: a progress bar while the grid is captured.
        calibrate: after capture, measure the card's cost model (``runtime.calibrate``, the quick
            one) into ``cost_models[device]``, for ``omnienc simulate/tune`` and the service's dispatch.
    """

    grid: BucketGrid | None = None
    runtime: Mapping | RuntimeConfig = field(default_factory=dict)
    encoders: tuple[str, ...] = ("vision", "audio")
    progress: bool = True
    calibrate: bool = False

    def __post_init__(self):
        grid = self.grid
        if isinstance(grid, (str, Path)):
            grid = BucketGrid.from_yaml(grid)
        elif isinstance(grid, Mapping):
            grid = BucketGrid.from_dict(dict(grid))
        elif grid is not None and not isinstance(grid, BucketGrid):
            raise ValueError(f"model_kwargs.grid: a grid YAML path, a mapping or a BucketGrid, "
                             f"got {type(grid).__name__}")
        object.__setattr__(self, "grid", grid)
        runtime = self.runtime
        if not isinstance(runtime, RuntimeConfig):
            if not isinstance(runtime, Mapping):
                raise ValueError(f"model_kwargs.runtime: a mapping of RuntimeConfig fields, "
                                 f"got {type(runtime).__name__}")
            unknown = sorted(set(runtime) - _RUNTIME_OPTIONS)
            if unknown:
                raise ValueError(f"model_kwargs.runtime: unknown option(s) {unknown}; "
                                 f"RuntimeConfig has {sorted(_RUNTIME_OPTIONS)}")
            try:
                runtime = RuntimeConfig(**runtime)
            except ValueError as e:
                raise ValueError(f"model_kwargs.runtime: {e}") from None
        object.__setattr__(self, "runtime", runtime)
        encoders = (self.encoders,) if isinstance(self.encoders, str) else tuple(self.encoders)
        if not encoders or not set(encoders) <= {"vision", "audio"} or len(set(encoders)) != len(encoders):
            raise ValueError(f"model_kwargs.encoders: a non-empty list of 'vision' and 'audio', got {self.encoders!r}")
        object.__setattr__(self, "encoders", encoders)


class Qwen3OmniOmniencModel(Qwen3OmniModel):
    """M*'s Qwen3-Omni model whose ``vision_encoder`` and ``audio_encoder`` nodes are omnienc's.

    Everything else (Thinker, Talker, Code2Wav, walks, prompt processing) is M*'s own. Options
    (the M* config's ``model_kwargs``): ``checkpoint`` (a local checkpoint directory or Hugging Face
    repo id instead of the registry's), ``grid``, ``runtime``, ``encoders``, ``progress``, ``calibrate`` (see
    ``EncoderNodesConfig``).

    The first encoder node M* asks for on a device loads that device's encoders (in the engine's
    autocast dtype; float32 where it has none), builds one ``EncoderRuntime`` and captures its grid;
    ``load_reports[device]`` then holds the GPU memory it took, also logged.
    """

    def __init__(self, model_path_hf: str = "", cache_dir: str | None = None, *, checkpoint: str | None = None,
                 grid=None, runtime: Mapping | None = None, encoders=("vision", "audio"), progress: bool = True,
                 calibrate: bool = False, **kwargs):
        self.encoder_nodes = EncoderNodesConfig(grid=grid, runtime=runtime or {}, encoders=encoders,
                                                progress=progress, calibrate=calibrate)
        super().__init__(str(checkpoint) if checkpoint else model_path_hf, cache_dir=cache_dir, **kwargs)
        self._runtimes: dict[torch.device, tuple[EncoderRuntime, torch.dtype]] = {}
        self.load_reports: dict[torch.device, dict] = {}
        self.cost_models: dict = {}  # device -> CostModel, with calibrate

    def _create_submodule(self, node_name: str, device, tp_group=None, autocast_dtype: torch.dtype | None = None):
        if node_name not in _NODES:
            return super()._create_submodule(node_name, device, tp_group=tp_group, autocast_dtype=autocast_dtype)
        modality, node_cls = _NODES[node_name]
        if modality not in self.encoder_nodes.encoders:
            raise ValueError(f"M* asks for node {node_name!r} but model_kwargs.encoders is "
                             f"{list(self.encoder_nodes.encoders)}: add {modality!r}")
        return node_cls(self.encoder_runtime(device, autocast_dtype or torch.float32))

    def encoder_runtime(self, device, dtype: torch.dtype = torch.bfloat16) -> EncoderRuntime:
        """The device's runtime: built, loaded and captured on first use; shared by its nodes."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        held = self._runtimes.get(device)
        if held is None:
            held = self._runtimes[device] = (self._build_runtime(device, dtype), dtype)
        elif held[1] != dtype:
            raise ValueError(f"{device}: the encoders were loaded in {held[1]}, a node now asks for {dtype}")
        return held[0]

    def _build_runtime(self, device: torch.device, dtype: torch.dtype) -> EncoderRuntime:
        from omnienc.encoders import AudioEncoder, VisionEncoder

        cfg = self.encoder_nodes
        cuda = device.type == "cuda"
        mem = _MemoryProbe(device)
        t0 = time.perf_counter()
        with torch.cuda.device(device) if cuda else contextlib.nullcontext():
            vision = (VisionEncoder.from_pretrained(self.local_dir, dtype=dtype, device=device)
                      if "vision" in cfg.encoders else None)
            audio = (AudioEncoder.from_pretrained(self.local_dir, dtype=dtype, device=device)
                     if "audio" in cfg.encoders else None)
            weights = mem.grew()
            rt = EncoderRuntime(vision=vision, audio=audio, grid=cfg.grid, device=device, config=cfg.runtime)
            buffers = mem.grew()
            captured = rt.capture(progress=cfg.progress)
            graphs = mem.grew()
        stats = rt.stats()
        report = {
            "device": str(device), "dtype": str(dtype).removeprefix("torch."), "encoders": list(cfg.encoders),
            "load_s": time.perf_counter() - t0, "capture_s": captured["capture_s"], "graphs": captured["graphs"],
            "cuda_graphs": rt.use_cuda_graphs,
            "graph_memory_bytes": {m: stats[m]["graph_memory_bytes"] for m in cfg.encoders},
            "weights_bytes": weights[0], "static_buffers_bytes": buffers[0], "capture_allocated_bytes": graphs[0],
            "allocated_bytes": weights[0] + buffers[0] + graphs[0],
            "reserved_bytes": weights[1] + buffers[1] + graphs[1],
            "max_transient_bytes": captured["max_transient_bytes"],
        }
        if cfg.calibrate:
            from omnienc.runtime.calibrate import calibrate

            t1 = time.perf_counter()
            with torch.cuda.device(device) if cuda else contextlib.nullcontext():
                self.cost_models[device] = calibrate(vision, audio, quick=True, command="mstar calibrate: true")
            report.update(calibrate_s=time.perf_counter() - t1, card=self.cost_models[device].card)
        self.load_reports[device] = report
        gib = 2**-30
        logger.info(
            "omnienc encoder nodes on %s (%s, %s): %d CUDA graphs captured in %.1f s (node creation %.1f s); "
            "GPU memory held: weights %.2f GiB, static buffers %.2f GiB, allocated by capture %.2f GiB "
            "(graph pools reserve %s); "
            "torch.cuda.memory_allocated grew by %.2f GiB, memory_reserved by %.2f GiB; "
            "one launch takes at most %s beyond that (RuntimeConfig.max_transient_bytes): leave room for it too",
            device, report["dtype"], "+".join(cfg.encoders), report["graphs"], report["capture_s"], report["load_s"],
            weights[0] * gib, buffers[0] * gib, graphs[0] * gib,
            ", ".join(f"{m} {b * gib:.2f} GiB" for m, b in report["graph_memory_bytes"].items()),
            report["allocated_bytes"] * gib, report["reserved_bytes"] * gib,
            "no bound" if report["max_transient_bytes"] is None else f"{report['max_transient_bytes'] * gib:.2f} GiB")
        return rt

    def stock_encoder_nodes(self, device, dtype: torch.dtype | None = None) -> dict[str, NodeSubmodule]:
        """M*'s own encoder nodes on the same checkpoint, built by ``Qwen3OmniModel``'s code (for
        A/B runs): transformers' encoders with the FlashAttention-2 M* asks for where it is
        installed, else transformers' default (SDPA); cast to ``dtype`` as M*'s engine casts them."""
        build = {"vision_encoder": Qwen3OmniModel._create_vision_encoder_submodule,
                 "audio_encoder": Qwen3OmniModel._create_audio_encoder_submodule}
        nodes = {}
        for name, create in build.items():
            try:
                node = create(self, str(device))  # M*'s loader takes a device string
            except (ImportError, ValueError, RuntimeError) as e:
                if not re.search("flash.?att", str(e), re.IGNORECASE):
                    raise
                logger.info("%s: FlashAttention-2 is not installed; M*'s stock node runs transformers' SDPA", name)
                with _hf_attention("sdpa"):
                    node = create(self, str(device))  # M*'s loader takes a device string
            nodes[name] = node.to(device=device, dtype=dtype) if dtype is not None else node
        return nodes


class _MemoryProbe:
    """CUDA memory (allocated, reserved) grown since the last reading; zeros off CUDA."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"
        self.last = self._read()

    def _read(self) -> tuple[int, int]:
        if not self.cuda:
            return 0, 0
        torch.cuda.synchronize(self.device)
        return torch.cuda.memory_allocated(self.device), torch.cuda.memory_reserved(self.device)

    def grew(self) -> tuple[int, int]:
        now = self._read()
        delta = (now[0] - self.last[0], now[1] - self.last[1])
        self.last = now
        return delta


@contextlib.contextmanager
def _hf_attention(impl: str):
    """transformers' Qwen3-Omni encoders built with attention ``impl`` whatever the caller asks for."""
    from transformers.models.qwen3_omni_moe import modeling_qwen3_omni_moe as hf

    classes = (hf.Qwen3OmniMoeVisionEncoder, hf.Qwen3OmniMoeAudioEncoder)
    own = {cls: cls.__dict__.get("_from_config") for cls in classes}
    for cls in classes:
        inner = cls._from_config.__func__

        def from_config(klass, config, _inner=inner, **kwargs):
            return _inner(klass, config, **{**kwargs, "attn_implementation": impl})

        cls._from_config = classmethod(from_config)
    try:
        yield
    finally:
        for cls in classes:
            if own[cls] is None:
                del cls._from_config  # back to the inherited classmethod
            else:
                cls._from_config = own[cls]


def register() -> None:
    """Adds ``qwen3_omni_omnienc`` to M*'s model registry (same checkpoint id as ``qwen3_omni``)."""
    _registry.MODEL_REGISTRY[MODEL_NAME] = (_MODULE, "Qwen3OmniOmniencModel")
    if "qwen3_omni" in _registry.HF_MODELS:
        _registry.HF_MODELS.setdefault(MODEL_NAME, dict(_registry.HF_MODELS["qwen3_omni"]))


register()


def main(argv: list[str] | None = None) -> None:
    """M*'s API server (``mstar-serve``) with ``qwen3_omni_omnienc`` registered. M* starts its
    conductor and workers as spawned processes; each re-imports this module as its main module, so
    the registration holds there too."""
    from mstar.api_server.entrypoint import main as serve

    serve(argv)


__all__ = ["AudioEncoderNode", "EncoderNodesConfig", "MODEL_NAME", "Qwen3OmniOmniencModel", "VisionEncoderNode",
           "main", "register"]


if __name__ == "__main__":
    main()
