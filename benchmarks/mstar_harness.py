"""What the M* tests and ``benchmarks/mstar_nodes.py`` share: importing M*, a checkpoint directory
with random encoder weights, and one engine step driven as M*'s worker drives it.

**Importing M*** (``load``). M*'s Qwen3-Omni model module imports ``triton`` (the Thinker's sampler
and fused-MoE kernels) and ``flashinfer`` (the Thinker's and Talker's attention, norms and rotary)
when it loads. Neither is called by the encoder nodes, stock or omnienc's, nor by the model class's
constructor, registry or engine path driven here; installing both on a CPU machine costs ~1.6 GB and
about a minute (docs/MSTAR.md), and flashinfer 0.7.2.post1's wheel (62 MB) nearly fills what one GPU
command may carry. So where either package is missing, ``load()`` imports M*'s modules with a
stand-in module in ``sys.modules`` for it during that import only, and removes it afterwards:

- the stand-in's attributes are inert objects: at import, a decorator (``@triton.jit``,
  ``triton.autotune(...)``) returns its function and a constructor (``triton.Config(...)``) an inert
  object; after the import, calling any of them raises, so a Thinker kernel reached by mistake fails
  loudly instead of computing;
- torch, transformers and M*'s engine modules are imported before, so none of them binds a stand-in
  (``load`` checks that no module but M*'s holds one);
- with triton and flashinfer installed (a full M* install) nothing is stood in; the GPU machine has
  triton, so there only flashinfer is.

**A checkpoint** (``write_checkpoint``): what ``Qwen3OmniModel`` reads when it is created and when it
builds its encoder nodes, and what omnienc's loader reads, generated here (nothing is downloaded):
``config.json`` (a ``Qwen3OmniMoeConfig`` whose Thinker holds the given encoder configs and a small
text model, with the released checkpoint's codec token ids, which M* checks), ``model.safetensors``
(``thinker.visual.*`` and ``thinker.audio_tower.*``, random and non-trivial: a missed norm or bias
shows; no Thinker weights) and a small word-level tokenizer holding Qwen3-Omni's special tokens.

**A step** (``step``): ``Engine.prepare_inputs`` (per request), ``exec_and_postprocess``, the
requests that failed there dropped, then ``check_stop_for_batch``, as ``mstar/worker/worker.py``
runs a node's step (``_execute_on_gpu_thread``, then ``_postprocess_batch`` after the step's
completion event).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import torch

STOOD_IN: tuple[str, ...] = ()  # which packages the last ``load`` stood in for


class _Window:
    open = False


class _Inert:
    """Any attribute of a stand-in module."""

    def __init__(self, name: str):
        self._name = name

    def __call__(self, *args, **kwargs):
        if not _Window.open:
            raise RuntimeError(f"{self._name}(...) called: a stand-in for a package that is not installed "
                               "(benchmarks/mstar_harness.py); only M*'s Thinker and Talker use it")
        if len(args) == 1 and not kwargs and callable(args[0]) and not isinstance(args[0], _Inert):
            return args[0]  # used as a decorator
        return _Inert(f"{self._name}()")

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Inert(f"{self._name}.{name}")

    def __getitem__(self, key):
        return _Inert(f"{self._name}[...]")


class _StandIn(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Inert(f"{self.__name__}.{name}")


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, roots: tuple[str, ...]):
        self.roots = roots

    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in self.roots:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StandIn(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def load():
    """Returns ``omnienc.integrations.mstar`` (M*'s model modules imported as described above)."""
    global STOOD_IN
    if "omnienc.integrations.mstar" in sys.modules:
        return sys.modules["omnienc.integrations.mstar"]
    # Everything that could bind a stand-in loads first, for real.
    import torch._dynamo  # noqa: F401
    import transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe  # noqa: F401

    import mstar.engine.engine  # noqa: F401
    import mstar.model.submodule_base  # noqa: F401
    import omnienc.runtime.runtime  # noqa: F401

    missing = tuple(n for n in ("triton", "flashinfer") if not _installed(n))
    for name in ("triton", "triton.language", "flashinfer"):
        if name.split(".")[0] not in missing:
            importlib.import_module(name)  # the real package, loaded outside the window
    STOOD_IN = missing
    if missing:
        before = set(sys.modules)
        finder = _Finder(missing)
        sys.meta_path.insert(0, finder)
        _Window.open = True
        try:
            import mstar.model.qwen3_omni.qwen3_omni_model  # noqa: F401
            import mstar.model.qwen3_omni.submodules  # noqa: F401
            import mstar.model.registry  # noqa: F401
        finally:
            _Window.open = False
            sys.meta_path.remove(finder)
            for name in [n for n in sys.modules if n.split(".")[0] in missing]:
                del sys.modules[name]
            if "triton" in missing:
                # torch caches whether triton imports; an answer given during the window is forgotten.
                import torch.utils._triton as torch_triton

                for fn in vars(torch_triton).values():
                    if callable(getattr(fn, "cache_clear", None)):
                        fn.cache_clear()
        bound = sorted(n for n in set(sys.modules) - before if not n.startswith("mstar")
                       and any(isinstance(v, (_StandIn, _Inert)) for v in vars(sys.modules[n]).values()))
        assert not bound, f"modules other than M*'s bound a stand-in: {bound}"
    return importlib.import_module("omnienc.integrations.mstar")


# --- a checkpoint directory -----------------------------------------------------------------------

# Qwen3-Omni's special tokens (the chat template's and the media placeholders).
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>", "<|audio_start|>", "<|audio_end|>", "<|audio_pad|>")
# The released checkpoint's codec ids (transformers' defaults differ; M* refuses those).
TALKER_CODEC_IDS = dict(codec_pad_id=2148, codec_bos_id=2149, codec_eos_token_id=2150, codec_nothink_id=2155,
                        codec_think_bos_id=2156, codec_think_eos_id=2157)


@torch.no_grad()
def randomize_(module: torch.nn.Module, generator: torch.Generator | None = None) -> torch.nn.Module:
    """Matrices ~ N(0, 1/fan_in); norm scales ~ N(1, 0.3); biases ~ N(0, 0.3)."""
    for name, p in module.named_parameters():
        noise = torch.randn(p.shape, generator=generator, dtype=torch.float32, device=p.device)
        if p.dim() >= 2:
            p.copy_(noise * p[0].numel() ** -0.5)
        elif name.endswith("weight"):
            p.copy_(1.0 + 0.3 * noise)
        else:
            p.copy_(0.3 * noise)
    return module


def _tokenizer(root: Path, words: int = 200) -> int:
    """A word-level tokenizer: the special tokens, then ``w0`` .. ``w{words-1}``; returns its size."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(("<unk>", *SPECIAL_TOKENS, *(f"w{i}" for i in range(words))))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", additional_special_tokens=list(SPECIAL_TOKENS))
    fast.save_pretrained(str(root))
    return len(vocab)


def write_checkpoint(root, vision_config, audio_config, dtype: torch.dtype = torch.float32, device="cpu",
                     seed: int = 0, text_overrides: dict | None = None):
    """Writes the checkpoint under ``root``; returns transformers' encoders ``(vision, audio)`` in
    float32 on ``device`` holding exactly the saved weights (rounded to ``dtype``), in eval mode.
    ``text_overrides``: overrides of the Thinker's small text config."""
    from safetensors.torch import save_file
    from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import Qwen3OmniMoeConfig
    from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import (
        Qwen3OmniMoeAudioEncoder,
        Qwen3OmniMoeVisionEncoder,
    )

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    vocab = _tokenizer(root)
    g = torch.Generator(device=device).manual_seed(seed)
    encoders, tensors = [], {}
    for cls, cfg, prefix in ((Qwen3OmniMoeVisionEncoder, vision_config, "thinker.visual."),
                             (Qwen3OmniMoeAudioEncoder, audio_config, "thinker.audio_tower.")):
        with torch.device(device):
            enc = randomize_(cls(cfg).eval(), g)
        with torch.no_grad():
            for k, v in enc.state_dict().items():
                if v.is_floating_point():
                    v.copy_(v.to(dtype))  # the module holds what the file holds
                tensors[prefix + k] = v.to(dtype if v.is_floating_point() else v.dtype).contiguous().cpu()
        encoders.append(enc)
    save_file(tensors, str(root / "model.safetensors"))
    del tensors
    text = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, head_dim=16, moe_intermediate_size=32, num_experts=4, num_experts_per_tok=2)
    text.update(text_overrides or {})
    config = Qwen3OmniMoeConfig(
        thinker_config=dict(vision_config=vision_config.to_dict(), audio_config=audio_config.to_dict(),
                            text_config=text),
        talker_config=TALKER_CODEC_IDS)
    config.save_pretrained(str(root))
    return tuple(encoders)


# --- the engines, as M*'s worker builds them --------------------------------------------------------


@dataclass
class Engines:
    """omnienc's nodes in the engine M*'s worker builds (``EngineManager.build``), and M*'s stock
    encoder nodes of the same model in an engine of their own."""

    omnienc: object
    stock: object
    log: list[str]  # what the model logged while its nodes were created (the load report)
    create_s: float  # the nodes' creation: weights, runtime, capture
    stock_create_s: float
    stock_nodes: dict  # node name -> M*'s stock submodule (the stock engine's)
    groups: object
    transfer: object


def build_engines(model, device: torch.device, dtype: torch.dtype, options: dict | None = None) -> Engines:
    """Creates ``model``'s encoder nodes through M*'s ``EngineManager`` (``options``: its engine
    options) and warms them up, capturing the model's log; then the stock nodes' engine (not warmed:
    its warm-up is M*'s ``torch.compile``)."""
    import logging
    import time

    from mstar.communication.tensors import LocalTransferEngine
    from mstar.distributed.communication import WorkerParallelGroups
    from mstar.engine.engine import Engine
    from mstar.engine.resources.kv.transfer import TransferEngineInfo
    from mstar.worker.engine_manager import EngineManager

    groups = WorkerParallelGroups(num_workers=1, global_rank=0)
    transfer = TransferEngineInfo("host", "host", LocalTransferEngine("host"))
    records, log = [], logging.getLogger(type(model).__module__)
    handler, level = logging.Handler(), log.level
    handler.emit = records.append
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    t0 = time.perf_counter()
    try:
        manager = EngineManager.build({"vision_encoder", "audio_encoder"}, device, options or {}, groups, transfer, model)
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
    create_s = time.perf_counter() - t0
    manager.warmup_all()
    t0 = time.perf_counter()
    stock_nodes = model.stock_encoder_nodes(device, dtype)
    stock_create_s = time.perf_counter() - t0
    stock = Engine(autocast_dtype=dtype)
    stock.load_model(stock_nodes, [], groups, device, transfer)
    return Engines(manager.engine, stock, [r.getMessage() for r in records], create_s, stock_create_s, stock_nodes,
                   groups, transfer)


# --- one step of a node ---------------------------------------------------------------------------


def forward_info(rid: str, walk: str):
    """The per-request info M*'s worker hands the engine for one step of ``walk``."""
    from mstar.conductor.request_info import CurrentForwardPassInfo

    return CurrentForwardPassInfo(request_id=rid, graph_walk=walk, fwd_index=0, random_seed=0, max_tokens=1)


def step(engine, node: str, walk: str, inputs: dict, corrupt=None, wait=None) -> tuple[dict, dict]:
    """One step of ``node`` over ``inputs`` ({request id: {input name: [tensor]}}); returns (the
    outputs of the requests that succeeded, {failed request id: error}). ``corrupt``: called between
    ``prepare_inputs`` and the forward (a value that goes bad after validation). ``wait``: called
    where the worker waits for the step's completion event (default: synchronize the device)."""
    import warnings

    from mstar.engine.engine import ExecutingBatch
    from mstar.engine.resources.step import StepContext

    rids = list(inputs)
    batch = ExecutingBatch(
        node_name=node,
        per_request_info={r: forward_info(r, walk) for r in rids},
        per_request_input_tensors=inputs,
        step_context=StepContext(request_ids=tuple(rids), graph_walk=walk, slot=0, capture=False),
    )
    with warnings.catch_warnings():
        # M*'s engine enters CPU autocast with float32, which torch only warns about (and disables).
        warnings.filterwarnings("ignore", message="In CPU autocast")
        engine.prepare_inputs(batch)
        if corrupt is not None:
            corrupt()
        outputs = engine.exec_and_postprocess(batch)
    failed = dict(batch.failed_requests)
    batch.failed_requests.clear()
    batch.request_ids = [r for r in batch.request_ids if r not in failed]
    for r in failed:
        outputs.pop(r, None)
    if wait is not None:
        wait()
    elif torch.cuda.is_available():
        torch.cuda.synchronize()
    engine.check_stop_for_batch(batch, outputs)
    failed |= batch.failed_requests
    return {r: o for r, o in outputs.items() if r not in failed}, failed
