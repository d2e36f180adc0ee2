"""Requests too large for every bucket, cut into pieces that fit, at attention-segment boundaries.

Pure functions over shapes (no torch), shared by the runtime and the simulator, so the tuner prices
what runs.

Vision: attention runs per frame (one temporal patch of an item), and a frame's position and rotary
embeddings depend only on its ``(h, w)``. A video cut between frames therefore gives every frame the
rows it has in the whole-video run: a request is cut into pieces of whole frames, in order, and its
output rows (embeddings and DeepStack alike) are the pieces' rows concatenated.

Audio: each clip is cut into 100-frame chunks (``chunk``) whose tokens depend on that chunk alone,
and attention runs in windows of ``window`` frames from the clip's start. A clip cut at multiples of
the window keeps every window whole, so its rows are its parts' rows concatenated. A clip's tail
chunk is zero-padded to a whole chunk only inside a clip of at least one chunk (a shorter clip is
convolved at its own length), so a last part shorter than a chunk takes one window more.

A piece never holds more than ``max_size`` units and ``max_batch`` segments (the largest bucket's).
Pieces that replay a graph bucket fill it, the rest going beside other requests' items; pieces that
run uncaptured (``even``) are as many as filling would give, made as equal as they can be, because
a small last piece runs slower per unit than the rest (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .grid import AUDIO_CHUNK_FRAMES, AUDIO_WINDOW_FRAMES, Bucket
from .packing import Demand, audio_demand, vision_demand


@dataclass(frozen=True, slots=True)
class Piece:
    """One piece of a request: its input rows ``[start, stop)`` (patches, or mel frames) and its
    shape (``(t, h, w)`` items, or clip frame counts), as a request of its own would have."""

    start: int
    stop: int
    shape: tuple


class Unsplittable(ValueError):
    """A segment larger than the largest bucket: it cannot be cut."""


@dataclass(frozen=True, slots=True)
class PieceLimit:
    """The most one piece holds (``size`` units, ``batch`` segments) and whether pieces run
    uncaptured, and so are cut as equal as they can be (``even``)."""

    size: int
    batch: int
    even: bool = False


def _evened(cut: Callable[[int], list[Piece]], max_size: int) -> list[Piece]:
    """``cut(max_size)``'s number of pieces at the smallest size that keeps it: pieces as equal as
    whole segments allow. ``cut`` is greedy, so its count never rises as the size grows."""
    best = cut(max_size)
    lo, hi = 0, max_size
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            pieces = cut(mid)
        except Unsplittable:
            pieces = None
        if pieces is not None and len(pieces) <= len(best):
            hi, best = mid, pieces
        else:
            lo = mid
    return best


def vision_pieces(grid: Sequence[Sequence[int]], max_size: int, max_batch: int,
                  even: bool = False) -> list[Piece]:
    """Pieces of whole frames, in order, each of at most ``max_size`` patches and ``max_batch``
    frames; consecutive items share a piece where they fit. Each piece is filled in turn, or with
    ``even`` as many pieces are made as equal as whole frames allow.

    Raises:
        Unsplittable: a frame (``h * w`` patches) larger than ``max_size``.
    """
    if even:
        return _evened(lambda size: vision_pieces(grid, size, max_batch), max_size)
    pieces: list[Piece] = []
    items: list[tuple[int, int, int]] = []
    start = row = size = batch = 0
    for t, h, w in grid:
        frame = h * w
        if frame > max_size:
            raise Unsplittable(f"one frame of {h}x{w} = {frame} patches is larger than the largest bucket "
                               f"({max_size} patches) and cannot be cut")
        left = t
        while left:
            room = min((max_size - size) // frame, max_batch - batch, left)
            if room == 0:  # this piece is full
                pieces.append(Piece(start, row, tuple(items)))
                items, start, size, batch = [], row, 0, 0
                continue
            items.append((room, h, w))
            size, batch, row, left = size + room * frame, batch + room, row + room * frame, left - room
    if items:
        pieces.append(Piece(start, row, tuple(items)))
    return pieces


def audio_parts(frames: int, max_part: int, window: int, chunk: int) -> list[int]:
    """A clip's parts: multiples of ``window`` frames of at most ``max_part``, then the rest; a rest
    shorter than ``chunk`` takes one window from the part before it (see the module docstring).

    Raises:
        Unsplittable: the clip needs a part longer than ``max_part`` (``max_part`` below one window,
            or below two where the rest must take one).
    """
    if frames <= max_part:
        return [frames]
    part = max_part // window * window
    if part == 0:
        raise Unsplittable(f"a clip of {frames} frames cannot be cut into attention windows of {window} frames "
                           f"that fit the largest bucket ({max_part} frames)")
    parts = [part] * (frames // part)
    rest = frames - sum(parts)
    if 0 < rest < chunk:
        parts[-1] -= window
        rest += window
        if parts[-1] == 0:
            parts.pop()
        if rest > max_part:
            raise Unsplittable(f"the last {rest} frames of a clip of {frames} frames cannot be cut at a window "
                               f"boundary ({window} frames) into parts that fit the largest bucket ({max_part} frames)")
    if rest:
        parts.append(rest)
    return parts


def audio_pieces(frames: Sequence[int], max_size: int, max_batch: int, window: int, chunk: int,
                 even: bool = False) -> list[Piece]:
    """Pieces of a request's clips, each of at most ``max_size`` chunk-padded frames and
    ``max_batch`` clips: long clips cut into parts (``audio_parts``), then consecutive parts and
    clips grouped in order. With ``even``, as many pieces made as equal as whole windows allow.

    Raises:
        Unsplittable: see ``audio_parts``.
    """
    if even:
        return _evened(lambda size: audio_pieces(frames, size, max_batch, window, chunk), max_size)
    pieces: list[Piece] = []
    clips: list[int] = []
    start = row = size = 0
    for n in frames:
        for part in audio_parts(n, max_size, window, chunk):
            padded = math.ceil(part / chunk) * chunk
            if clips and (size + padded > max_size or len(clips) == max_batch):
                pieces.append(Piece(start, row, tuple(clips)))
                clips, start, size = [], row, 0
            clips.append(part)
            size, row = size + padded, row + part
    if clips:
        pieces.append(Piece(start, row, tuple(clips)))
    return pieces


def piece_limit(largest: Bucket, graph: bool, merge_units: int, within: int | None) -> PieceLimit:
    """The most one piece of a split request holds (the runtime's ``Lane.set_bound``, the simulator).

    Where the largest bucket is a graph bucket, pieces fill it (they replay its graph). Where it is
    an eager bucket they run uncaptured anyway, so a piece is as large as one uncaptured call may
    be: ``merge_units`` (a merged eager call's most units; 0: no merging, the largest bucket),
    with segments in proportion, and pieces are made even. Either way at most ``within`` units
    (the bound on transient memory; None: no bound), at least 1.
    """
    size = largest.size if graph else max(largest.size, merge_units)
    size = max(1, size if within is None else min(size, within))
    return PieceLimit(size, largest.batch * max(1, -(-size // largest.size)), even=not graph)


def piece_demands(modality: str, demand: Demand, limit: PieceLimit, window: int = AUDIO_WINDOW_FRAMES,
                  chunk: int = AUDIO_CHUNK_FRAMES) -> list[Demand]:
    """The demands of a request's pieces as the runtime cuts it (for the simulator): ``demand``
    itself where it carries no shape or cannot be cut, else one per piece of at most ``limit``."""
    if demand.shape is None:
        return [demand]
    try:
        if modality == "vision":
            return [vision_demand(p.shape)
                    for p in vision_pieces(demand.shape, limit.size, limit.batch, limit.even)]
        return [audio_demand(p.shape)
                for p in audio_pieces(demand.shape, limit.size, limit.batch, window, chunk, limit.even)]
    except Unsplittable:
        return [demand]


__all__ = ["Piece", "PieceLimit", "Unsplittable", "audio_parts", "audio_pieces", "piece_demands", "piece_limit",
           "vision_pieces"]
