"""Inputs to the device: the inputs of a call as views of one device buffer.

``Stager`` gathers every input of a call (images, video frames, waveforms: one dtype per stager; on
the host or already on a device) and the values the caller writes on the host (``add_raw``: frame
and padding indices) into one device buffer, whose slots come back as views; ``add_device`` slots
are room the device work fills itself.

Two ways to send host inputs, chosen by ``PreprocessConfig.pin_host_inputs`` (``pin``):

* pageable (the default): each input is copied from where it lies straight into its device slot
  (no host copy, no host buffer but for the ``add_raw`` slots). CUDA stages a pageable copy itself,
  after waiting for the stream's earlier work: on an idle GPU that costs nothing, behind a running
  encode the host waits for it;
* pinned: everything is first packed on the host into one buffer from torch's caching host
  allocator (``pin_memory=True``), then sent with one ``non_blocking`` copy. It never waits for the
  GPU, so an engine that preprocesses while the GPU encodes may want it; on an idle GPU it measured
  slower (docs/BENCHMARKS.md, "Preprocessing").

Inputs already on a device are copied device to device; on the CPU the host buffer is the result.
"""

from __future__ import annotations

import math

import torch


class Stager:
    """Collects host inputs of one dtype and moves them into one device buffer, whose slots come back
    as views.

    Slots: ``add(x)`` (a host tensor or array, copied as it lies), ``add_stack(sources, shape)``
    (several host arrays as the rows of one slot: images of one size, a video's kept frames),
    ``add_raw(shape)`` (values the caller writes on the host through ``host(slot)`` after ``pack``),
    ``add_device(shape)`` (room on the device only, never copied: the caller fills it there).
    Consecutive reservations are adjacent, so a run of slots is one span of the device buffer
    (``span``). ``send()`` copies; ``get(slot)`` is then the slot's device tensor.
    On the CPU the host buffer is the result and ``send`` copies nothing. ``pin``: host inputs go
    through one pinned buffer (CUDA only; see the module docstring).
    """

    def __init__(self, dtype: torch.dtype, device: torch.device, pin: bool = False):
        self.dtype, self.device = dtype, torch.device(device)
        self.pinned = pin and self.device.type == "cuda"
        # (kind, sources, offset, shape): kind "src" (sources: arrays, rows in order), "raw", "dev"
        self._items: list[tuple[str, list | None, int, tuple]] = []
        self._size = 0
        self._host: torch.Tensor | None = None
        self._raw_at: dict[int, int] = {}  # pageable: raw slot -> offset in the (raw-only) host buffer
        self._dev: torch.Tensor | None = None
        self._on_pack: list = []

    def __len__(self) -> int:
        return len(self._items)

    def add(self, x, shape: tuple | None = None) -> int:
        """Reserves room for host tensor or array ``x`` (copied by ``send``); returns its slot."""
        return self._reserve("src", [x], tuple(x.shape) if shape is None else tuple(shape))

    def add_stack(self, sources: list, shape: tuple) -> int:
        """Reserves one slot of ``shape`` whose rows are ``sources`` in order: each a host array or
        tensor of ``shape[1:]`` (one row) or of ``[k, *shape[1:]]`` (k rows)."""
        return self._reserve("src", list(sources), tuple(shape))

    def add_raw(self, shape: tuple) -> int:
        """Reserves ``shape`` elements that the caller writes into ``host(slot)`` after ``pack``."""
        return self._reserve("raw", None, tuple(shape))

    def add_device(self, shape: tuple) -> int:
        """Reserves ``shape`` elements of the device buffer that nothing copies (uninitialized)."""
        return self._reserve("dev", None, tuple(shape))

    def _reserve(self, kind: str, sources, shape: tuple) -> int:
        self._items.append((kind, sources, self._size, shape))
        self._size += math.prod(int(d) for d in shape)
        return len(self._items) - 1

    def on_pack(self, fill) -> None:
        """``fill()`` runs after ``pack`` copied the sources: it writes the ``add_raw`` slots."""
        self._on_pack.append(fill)

    def _through_host(self) -> bool:
        return self.device.type == "cpu" or self.pinned

    def pack(self) -> None:
        """Allocates the host buffer (pinned when ``pinned``) and copies the sources in
        where they travel through it; then runs the ``on_pack`` fills. Pageable copies need host
        memory only for the ``add_raw`` slots."""
        if self._through_host():
            self._host = torch.empty(self._size, dtype=self.dtype, pin_memory=self.pinned)
            for kind, sources, offset, shape in self._items:
                if kind == "src":
                    for rows, src in _rows_of(sources, shape):
                        if _on_host(src):
                            host_copy(_slot_view(self._host, offset, shape)[rows], src)
        else:
            at = 0
            for k, (kind, _, _, shape) in enumerate(self._items):
                if kind == "raw":
                    self._raw_at[k] = at
                    at += math.prod(int(d) for d in shape)
            self._host = torch.empty(at, dtype=self.dtype)
        for fill in self._on_pack:
            fill()

    def host(self, slot: int) -> torch.Tensor:
        _, _, offset, shape = self._items[slot]
        return _slot_view(self._host, self._raw_at.get(slot, offset), shape)

    def send(self, into: torch.Tensor | None = None) -> None:
        """Moves every slot to the device: one asynchronous copy of the pinned buffer, or (pageable)
        one copy per host source, straight from where it lies, and one per ``add_raw`` slot; sources
        already on a device are copied device to device. ``into``: a device buffer of at least
        ``size`` elements to fill instead of a new one (a CUDA graph's static input)."""
        if self._host is None:
            self.pack()
        if self.device.type == "cpu":
            self._dev = self._host
        elif self.pinned:
            self._dev = self._host.to(self.device, non_blocking=True) if into is None else \
                into[: self._size].copy_(self._host, non_blocking=True)
        else:
            self._dev = torch.empty(self._size, dtype=self.dtype, device=self.device) if into is None else into
            for k, (kind, _, offset, shape) in enumerate(self._items):
                if kind == "raw":
                    _slot_view(self._dev, offset, shape).copy_(self.host(k), non_blocking=True)
        for kind, sources, offset, shape in self._items:
            if kind != "src":
                continue
            dst = _slot_view(self._dev, offset, shape)
            for rows, src in _rows_of(sources, shape):
                if not _on_host(src) or not self._through_host():
                    dst[rows].copy_(torch.as_tensor(src).reshape(dst[rows].shape), non_blocking=True)

    @property
    def size(self) -> int:
        """Elements of the device buffer."""
        return self._size

    def get(self, slot: int) -> torch.Tensor:
        _, _, offset, shape = self._items[slot]
        return _slot_view(self._dev, offset, shape)

    def span(self, first: int, n: int) -> torch.Tensor:
        """The ``n`` device elements starting at slot ``first`` (a run of adjacent slots)."""
        return self._dev[self._items[first][2] : self._items[first][2] + n]


def _on_host(x) -> bool:
    return not isinstance(x, torch.Tensor) or x.device.type == "cpu"


def _rows_of(sources: list, shape: tuple):
    """``(row slice, source)`` of each source of a slot (one source: the whole slot)."""
    if len(sources) == 1:
        yield slice(None), sources[0]
        return
    at = 0
    for src in sources:
        k = 1 if len(src.shape) == len(shape) - 1 else src.shape[0]
        yield (at if k == 1 else slice(at, at + k)), src
        at += k


def _slot_view(buf: torch.Tensor, offset: int, shape: tuple) -> torch.Tensor:
    """The ``shape`` view of flat ``buf`` starting at ``offset``."""
    return buf[offset : offset + math.prod(int(d) for d in shape)].view(shape)


def host_copy(dst: torch.Tensor, src) -> None:
    """``dst[...] = src`` between host tensors (or arrays) through NumPy where it can: host work
    stays out of torch's dispatcher, so only device work shows in a dispatch trace."""
    if isinstance(src, torch.Tensor) and src.dtype == torch.bfloat16 or dst.dtype == torch.bfloat16:
        dst.copy_(src if isinstance(src, torch.Tensor) else torch.from_numpy(src))
        return
    d = dst.numpy()
    d[...] = src.numpy() if isinstance(src, torch.Tensor) else src


def to_device(x: torch.Tensor, device: torch.device, pin: bool = False) -> torch.Tensor:
    """``x`` on ``device``: as is if it is there, else copied (through a pinned buffer with ``pin``,
    see ``Stager``)."""
    device = torch.device(device)
    if x.device == device or (device.type == x.device.type and device.index is None):
        return x
    if x.device.type != "cpu" or not (pin and device.type == "cuda") or x.is_pinned():
        return x.to(device, non_blocking=True)  # pageable: synchronous, through the driver
    s = Stager(x.dtype, device, pin)
    slot = s.add(x)
    s.send()
    return s.get(slot)


__all__ = ["Stager", "host_copy", "to_device"]
