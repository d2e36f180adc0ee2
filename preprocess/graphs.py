"""CUDA graphs of preprocessing, for layouts seen before.

Preprocessing one request runs ~10 short kernels (a 448x448 image: ~14 us of GPU work; 30 s of
audio: ~150 us), each launched from Python, so on a GPU it costs host time, not GPU time. Inputs of
one layout -- the same kinds and sizes of images, frames and waveforms (``batch.layout_key``) --
run the same kernels on the same shapes, so their device work can be one CUDA graph: the inputs
are copied into the graph's static buffers (the copies a launch makes anyway), the graph is
replayed, and the outputs are copied out to tensors the caller owns.

``preprocess_many`` uses them on CUDA unless told not to (``graphs=False``, or
``PreprocessConfig(graphs=False)``). ``PreprocessGraphs`` (one per device, ``graphs_for``) keeps its
graphs in a ``cuda.GraphCache``: a layout is captured at its ``admit_at``-th sighting (the first
runs eagerly, and fills every lazily built constant and FFT plan the capture then needs), at most
``max_graphs`` are kept (least recently used first out) in one memory pool, the last ``max_seen``
layouts' sightings are remembered, and a layout whose capture fails runs eagerly from then on.
Replays of one device's graphs take a lock (their buffers are shared) and are ordered on the GPU
after the previous replay's copies out; the eager path takes none.

What it does not cover: a layout never repeated (traffic of ever new sizes) runs eagerly, as
before; the first sightings pay the eager cost and the ``admit_at``-th a capture (a few ms).
"""

from __future__ import annotations

import dataclasses
import threading

import torch

from ..cuda import GraphCache
from ..cuda import graphs as cuda_graphs
from .batch import Staged, layout_key
from .config import PreprocessConfig


@dataclasses.dataclass
class _Entry:
    graph: torch.cuda.CUDAGraph
    staged: Staged  # the captured run: its index buffers stay alive
    u8: torch.Tensor  # static input buffers
    f32: torch.Tensor
    outputs: list


class PreprocessGraphs:
    """Captured preprocessing graphs of one CUDA device (see the module docstring).

    Args:
        device: the CUDA device.
        max_graphs: graphs kept (least recently used out): each holds its static buffers.
        admit_at: a layout is captured at this sighting (the first builds what the capture needs).
        max_seen: layouts whose sightings are remembered.
    """

    def __init__(self, device: torch.device, max_graphs: int = 16, admit_at: int = 2, max_seen: int = 256):
        self.device = torch.device(device)
        self.cache = GraphCache(max_graphs, admit_at, max_seen)
        self._lock = threading.Lock()
        self._stream: torch.cuda.Stream | None = None  # this device's capture stream, not the runtime's
        self._done: torch.cuda.Event | None = None  # after the last replay's copies out
        self.eager = 0  # runs without a graph

    def run(self, plans: list, cfg: PreprocessConfig) -> list:
        """The outputs of ``plans`` (``batch.plan_items``), by a graph replay if the layout has one."""
        key = (layout_key(plans), _config_key(cfg))
        with self._lock:
            entry = self.cache.lookup(key)
            if entry is not None:
                return self._replay(entry, plans, cfg)
            if self.cache.admit(key):
                entry = self.cache.capture(key, lambda: self._capture(plans, cfg))
                if entry is not None:
                    return self._replay(entry, plans, cfg)
            self.eager += 1
        staged = Staged(plans, cfg, self.device)
        staged.send()
        return staged.finish()

    def _replay(self, entry: _Entry, plans: list, cfg: PreprocessConfig) -> list:
        stream = torch.cuda.current_stream(self.device)
        if self._done is not None:
            stream.wait_event(self._done)  # the last replay's copies out, on whichever stream
        staged = Staged(plans, cfg, self.device)
        staged.send(entry.u8, entry.f32, indices=False)
        entry.graph.replay()
        out = _owned(entry.outputs)
        self._done = torch.cuda.Event()
        self._done.record(stream)
        return out

    def _capture(self, plans: list, cfg: PreprocessConfig) -> _Entry:
        """Captures the layout's device work on static input buffers (after one eager run on the
        capture stream, for the workspaces and FFT plans the capture needs)."""
        dev = self.device
        with torch.cuda.device(dev):
            staged = Staged(plans, cfg, dev)
            u8 = torch.empty(staged.u8.size, dtype=torch.uint8, device=dev)
            f32 = torch.empty(staged.f32.size, dtype=torch.float32, device=dev)
            staged.send(u8, f32)
            if self._stream is None:
                self._stream = torch.cuda.Stream(dev)
            graph, outputs = cuda_graphs.capture_live(staged.finish, self.cache.pool, self._stream, warmup=1)
        return _Entry(graph, staged, u8, f32, outputs)

    def stats(self) -> dict:
        """Counts of eager runs, replays, captures, failed captures and evictions; graphs held."""
        with self._lock:
            c = self.cache.counts
            return {"eager": self.eager, "replays": c["replays"], "captures": c["captures"],
                    "failures": c["failures"], "evictions": c["evictions"], "graphs": len(self.cache)}

    def clear(self) -> None:
        """Drops every graph and sighting."""
        with self._lock:
            self.cache.clear()


def _config_key(cfg: PreprocessConfig) -> tuple:
    return tuple(getattr(cfg, f.name) for f in dataclasses.fields(cfg))  # tuples and scalars


def _owned(outputs: list) -> list:
    """Copies of a graph's static outputs (``VisionInputs`` / ``AudioInputs``): each underlying
    buffer copied once, in stream order, and every output a view of its copy as before."""
    copies: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def own(t: torch.Tensor) -> torch.Tensor:
        base = t if t._base is None else t._base
        if id(base) not in copies:
            copies[id(base)] = (base, base.clone())
        base, copy = copies[id(base)]
        if copy.stride() != base.stride():  # not a dense layout: a copy of this view alone
            return t.clone()
        return copy.as_strided(t.shape, t.stride(), copy.storage_offset() + t.storage_offset() - base.storage_offset())

    def field(v):
        return own(v) if isinstance(v, torch.Tensor) else list(v) if isinstance(v, list) else v

    return [dataclasses.replace(o, **{f.name: field(getattr(o, f.name)) for f in dataclasses.fields(o)})
            for o in outputs]


_per_device: dict[torch.device, PreprocessGraphs] = {}
_per_device_lock = threading.Lock()


def graphs_for(device: torch.device) -> PreprocessGraphs:
    """The process's ``PreprocessGraphs`` of a CUDA device."""
    device = torch.device(device)
    if device.index is None:
        device = torch.device(device.type, torch.cuda.current_device())
    with _per_device_lock:
        if device not in _per_device:
            _per_device[device] = PreprocessGraphs(device)
        return _per_device[device]


__all__ = ["PreprocessGraphs", "graphs_for"]
