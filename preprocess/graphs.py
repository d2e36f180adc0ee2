"""CUDA graphs of preprocessing, for layouts seen before.

Preprocessing one request runs ~10 short kernels (a 448x448 image: ~14 us of GPU work; 30 s of
audio: ~150 us), each launched from Python, so on a GPU it costs host time, not GPU time. Inputs of
one layout -- the same kinds and sizes of images, frames and waveforms (``batch.layout_key``) --
run the same kernels on the same shapes, so their device work can be one CUDA graph: the inputs
are copied into the graph's static buffers (the copies a launch makes anyway), the graph is
replayed, and the outputs are copied out to tensors the caller owns.

``preprocess_many`` uses them on CUDA unless told not to (``graphs=False``, or
``OMNIENC_PREPROCESS_GRAPHS=0`` in the environment). ``PreprocessGraphs`` (one per device,
``graphs_for``) captures a layout at its ``ADMIT_AT``-th sighting (the first runs eagerly, and
fills every lazily built constant and FFT plan the capture then needs), keeps at most
``MAX_GRAPHS`` (least recently used first out), shares one memory pool between them, and remembers
the last ``MAX_SEEN`` layouts it saw. A layout whose capture fails runs eagerly from then on.
Replays of one device's graphs take a lock (their buffers are shared) and are ordered on the GPU
after the previous replay's copies out; the eager path takes none.

What it does not cover: a layout never repeated (traffic of ever new sizes) runs eagerly, as
before; the first sightings pay the eager cost and the ``ADMIT_AT``-th a capture (a few ms).
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections import OrderedDict

import torch

from .batch import Staged, layout_key
from .config import PreprocessConfig

ENABLED = os.environ.get("OMNIENC_PREPROCESS_GRAPHS", "1") != "0"  # preprocess_many's default
ADMIT_AT = 2  # a layout is captured at this sighting
MAX_GRAPHS = 16  # graphs kept per device
MAX_SEEN = 256  # layouts remembered per device (for their sightings)


@dataclasses.dataclass
class _Entry:
    graph: torch.cuda.CUDAGraph
    staged: Staged  # the captured run: its index buffers stay alive
    u8: torch.Tensor  # static input buffers
    f32: torch.Tensor
    outputs: list


class PreprocessGraphs:
    """Captured preprocessing graphs of one CUDA device (see the module docstring)."""

    def __init__(self, device: torch.device, max_graphs: int = MAX_GRAPHS, admit_at: int = ADMIT_AT):
        self.device = torch.device(device)
        self.max_graphs, self.admit_at = max_graphs, admit_at
        self._graphs: OrderedDict[tuple, _Entry] = OrderedDict()
        self._seen: OrderedDict[tuple, int] = OrderedDict()  # sightings; -1: capture failed
        self._lock = threading.Lock()
        self._pool = None
        self._stream: torch.cuda.Stream | None = None
        self._done: torch.cuda.Event | None = None  # after the last replay's copies out
        self.counts = {"eager": 0, "replays": 0, "captures": 0, "failures": 0, "evictions": 0}

    def run(self, plans: list[tuple], cfg: PreprocessConfig) -> list:
        """The outputs of ``plans`` (``batch.plan_items``), by a graph replay if the layout has one."""
        key = (layout_key(plans), _config_key(cfg))
        with self._lock:
            entry = self._graphs.get(key)
            if entry is not None:
                self._graphs.move_to_end(key)
                self.counts["replays"] += 1
                return self._replay(entry, plans, cfg)
            seen = self._seen.pop(key, 0)
            self._seen[key] = -1 if seen < 0 else seen + 1
            while len(self._seen) > MAX_SEEN:
                self._seen.popitem(last=False)
            if seen >= 0 and seen + 1 >= self.admit_at:
                out = self._capture(key, plans, cfg)
                if out is not None:
                    return out
            self.counts["eager"] += 1
        staged = Staged(plans, cfg, self.device)
        staged.send()
        return staged.finish()

    def _replay(self, entry: _Entry, plans: list[tuple], cfg: PreprocessConfig) -> list:
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

    def _capture(self, key: tuple, plans: list[tuple], cfg: PreprocessConfig) -> list | None:
        """Captures the layout's device work and replays it for these inputs; None (and the
        layout marked eager) if the capture fails."""
        dev = self.device
        try:
            with torch.cuda.device(dev):
                staged = Staged(plans, cfg, dev)
                u8 = torch.empty(staged.u8.size, dtype=torch.uint8, device=dev)
                f32 = torch.empty(staged.f32.size, dtype=torch.float32, device=dev)
                staged.send(u8, f32)
                if self._stream is None:
                    self._stream = torch.cuda.Stream(dev)
                self._stream.wait_stream(torch.cuda.current_stream(dev))
                with torch.cuda.stream(self._stream):
                    staged.finish()  # warm-up on the capture stream (workspaces, plans)
                    # Not ``torch.cuda.graph``: it synchronizes and empties the allocator's cache,
                    # and a failing capture would leave its stream context entered. Errors of this
                    # thread only: the runtime may be launching from another one meanwhile.
                    graph = torch.cuda.CUDAGraph()
                    graph.capture_begin(pool=self._pool, capture_error_mode="thread_local")
                    try:
                        outputs = staged.finish()
                    finally:
                        graph.capture_end()
                torch.cuda.current_stream(dev).wait_stream(self._stream)
        except Exception:  # noqa: BLE001 - an uncapturable layout runs eagerly
            self.counts["failures"] += 1
            self._seen[key] = -1
            return None
        self._pool = graph.pool()
        self.counts["captures"] += 1
        if len(self._graphs) >= self.max_graphs:
            self._graphs.popitem(last=False)
            self.counts["evictions"] += 1
        entry = self._graphs[key] = _Entry(graph, staged, u8, f32, outputs)
        return self._replay(entry, plans, cfg)

    def stats(self) -> dict:
        """Counts of eager runs, replays, captures, failed captures and evictions; graphs held."""
        with self._lock:
            return {**self.counts, "graphs": len(self._graphs)}

    def clear(self) -> None:
        """Drops every graph and sighting."""
        with self._lock:
            self._graphs.clear()
            self._seen.clear()


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


__all__ = ["ADMIT_AT", "ENABLED", "MAX_GRAPHS", "PreprocessGraphs", "graphs_for"]
