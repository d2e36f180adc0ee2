"""Host inputs to the device: the inputs of a call as views of one device buffer.

``Stager`` gathers every host input of a call (images, video frames, waveforms: one dtype per
stager) and the values the caller writes on the host (``add_raw``: reflect-padded signals, frame
indices) into one device buffer, whose slots come back as views.

Two ways to send, chosen by ``PIN_HOST_INPUTS``:

* pageable (the default): each input is copied from where it lies straight into its device slot,
  the ``add_raw`` slots from one host buffer. CUDA stages a pageable copy itself, after waiting for
  the stream's earlier work: on an idle GPU that costs nothing, behind a running encode the host
  waits for it;
* pinned: everything is first packed on the host into one buffer from torch's caching host
  allocator (``pin_memory=True``), then sent with one ``non_blocking`` copy.

Measured on an H200 (same run, 2026-11-28, `docs/BENCHMARKS.md`), from host inputs: pinned staging
took 0.54 ms for a 448x448 image, 4.1 ms for 1280x720 and 2.6 ms for 30 s of audio, against 0.23,
0.73 and 0.96 ms for pageable copies on an idle GPU. Pinned staging never waits for the GPU, so an
engine that preprocesses while the GPU encodes can set ``PIN_HOST_INPUTS``. On the CPU (or for
tensors already on the device) nothing is copied.
"""

from __future__ import annotations

import math

import torch


PIN_HOST_INPUTS = False  # see the module docstring: measured slower on an H200 host


def pinned_supported(device: torch.device) -> bool:
    """Whether host inputs for ``device`` go through pinned memory (CUDA, with ``PIN_HOST_INPUTS``)."""
    return device.type == "cuda" and PIN_HOST_INPUTS


class Stager:
    """Collects host tensors of one dtype, then moves them to ``device`` in one copy.

    ``add(x)`` reserves room for ``x`` (any shape, host memory) and returns a slot; ``add_raw(n)``
    reserves ``n`` elements the caller fills itself through ``host(slot)`` after ``pack``. ``send()``
    copies everything at once; ``get(slot)`` is then the slot's device tensor (a view).
    On the CPU the host buffer is the result and ``send`` copies nothing.
    """

    def __init__(self, dtype: torch.dtype, device: torch.device):
        self.dtype, self.device = dtype, torch.device(device)
        self._items: list[tuple[torch.Tensor | None, int, tuple]] = []  # (source, offset, shape)
        self._size = 0
        self._host: torch.Tensor | None = None
        self._dev: torch.Tensor | None = None
        self._on_pack: list = []

    def __len__(self) -> int:
        return len(self._items)

    def add(self, x: torch.Tensor, shape: tuple | None = None) -> int:
        """Reserves room for ``x`` (copied by ``pack``); returns its slot."""
        return self._reserve(x, tuple(x.shape) if shape is None else shape)

    def add_raw(self, shape: tuple, align: int = 1) -> int:
        """Reserves ``shape`` elements that the caller writes into ``host(slot)`` after ``pack``."""
        return self._reserve(None, tuple(shape), align)

    def _reserve(self, x, shape: tuple, align: int = 1) -> int:
        n = math.prod(int(d) for d in shape)
        offset = -(-self._size // align) * align
        self._items.append((x, offset, shape))
        self._size = offset + n
        return len(self._items) - 1

    def on_pack(self, fill) -> None:
        """``fill()`` runs after ``pack`` copied the sources: it writes the ``add_raw`` slots."""
        self._on_pack.append(fill)

    def pack(self) -> None:
        """Allocates the host buffer (pinned when ``pinned_supported``), copies the sources in where
        they travel through it, then runs the ``on_pack`` fills."""
        pin = pinned_supported(self.device)
        self._host = torch.empty(self._size, dtype=self.dtype, pin_memory=pin)
        through_host = pin or self.device.type == "cpu"
        for x, offset, shape in self._items:
            if x is not None and through_host:
                host_copy(self.host_view(offset, shape), x)
        for fill in self._on_pack:
            fill()

    def host_view(self, offset: int, shape: tuple) -> torch.Tensor:
        return _slot_view(self._host, offset, shape)

    def host(self, slot: int) -> torch.Tensor:
        _, offset, shape = self._items[slot]
        return self.host_view(offset, shape)

    def send(self) -> None:
        """Moves every slot to the device: one asynchronous copy of the pinned buffer, or (pageable)
        one copy per slot from its source."""
        if self._host is None:
            self.pack()
        if self.device.type == "cpu" or self._size == 0:
            self._dev = self._host
        elif pinned_supported(self.device):
            self._dev = self._host.to(self.device, non_blocking=True)
        else:  # pageable: every slot by its own copy, straight from its source
            self._dev = torch.empty(self._size, dtype=self.dtype, device=self.device)
            for x, offset, shape in self._items:
                src = self.host_view(offset, shape) if x is None else torch.as_tensor(x).reshape(shape)
                _slot_view(self._dev, offset, shape).copy_(src, non_blocking=True)

    def get(self, slot: int) -> torch.Tensor:
        _, offset, shape = self._items[slot]
        return _slot_view(self._dev, offset, shape)


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


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``x`` on ``device``: as is if it is there, else through a pinned buffer (see ``Stager``)."""
    device = torch.device(device)
    if x.device == device or (device.type == x.device.type and device.index is None):
        return x
    if x.device.type != "cpu" or not pinned_supported(device) or x.is_pinned():
        return x.to(device, non_blocking=True)  # pageable: synchronous, through the driver
    s = Stager(x.dtype, device)
    slot = s.add(x)
    s.send()
    return s.get(slot)


__all__ = ["Stager", "host_copy", "pinned_supported", "to_device"]
