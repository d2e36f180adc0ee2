"""Packing requests into buckets: pure functions over sizes (no torch).

Shared by the runtime, the simulator (``omnienc simulate``) and the tuner, so all three agree on
which bucket a mix of requests lands in. A ``Pack`` is one run: the requests that run together on
one bucket (a graph replay or an eager run), or a request that fits no bucket (a fallback).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from omnienc.runtime.grid import AUDIO_CHUNK_FRAMES, Bucket, check_int


@dataclass(frozen=True, slots=True)
class Demand:
    """What one request needs from a bucket.

    Attributes:
        size: Units, >= 1: patches (vision) or chunk-padded mel frames (audio).
        batch: Segments, >= 1: frames of all items (vision) or audios (audio).
        shape: The request's items (``(t, h, w)`` triples, or frame counts) where known: what a
            request larger than every bucket is cut by (``split``). Not part of equality.
    """

    size: int
    batch: int
    shape: tuple | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.size < 1 or self.batch < 1:
            raise ValueError(f"demand {self} must have size >= 1 and batch >= 1")


def vision_demand(grid_thw: Iterable[Sequence[int]]) -> Demand:
    """Demand of a vision request.

    Args:
        grid_thw: One (t, h, w) per image/video, in patches; h and w even (2x2 merge).

    Returns:
        ``Demand(sum(t*h*w), sum(t))``: each temporal frame is one attention segment.

    Raises:
        ValueError: No items, an item that is not three positive integers, or odd h/w.
    """
    size = batch = 0
    items = []
    for i, item in enumerate(grid_thw):
        thw = tuple(item)
        if len(thw) != 3:
            raise ValueError(f"grid_thw[{i}]: expected (t, h, w), got {thw!r}")
        t, h, w = (check_int(f"grid_thw[{i}].{n}", v, 1, ValueError) for n, v in zip("thw", thw))
        if h % 2 or w % 2:
            raise ValueError(f"grid_thw[{i}]: h={h}, w={w} must be even (2x2 patch merge)")
        size, batch = size + t * h * w, batch + t
        items.append((t, h, w))
    if not batch:
        raise ValueError("grid_thw is empty; a vision request needs at least one (t, h, w)")
    return Demand(size, batch, tuple(items))


def audio_demand(frames: Iterable[int]) -> Demand:
    """Demand of an audio request.

    Args:
        frames: Mel frame count T of each audio (100 per second).

    Returns:
        ``Demand(sum(ceil(T/100)*100), len(frames))``: each audio is cut into 100-frame chunks.

    Raises:
        ValueError: No audios, or a count that is not a positive integer.
    """
    counts = [check_int(f"frames[{i}]", t, 1, ValueError) for i, t in enumerate(frames)]
    if not counts:
        raise ValueError("frames is empty; an audio request needs at least one frame count")
    chunks = sum(math.ceil(t / AUDIO_CHUNK_FRAMES) for t in counts)
    return Demand(chunks * AUDIO_CHUNK_FRAMES, len(counts), tuple(counts))


@dataclass(frozen=True, slots=True)
class Pack:
    """Requests that run together: on one bucket, or alone when the request fits no bucket.

    Attributes:
        bucket: The smallest bucket holding all members; None when the request fits no bucket
            and runs eagerly alone (then it is the only member).
        members: Request indices into the ``pack`` input, ascending.
        size: Units used, the sum of the members' sizes (<= ``bucket.size``).
        batch: Segments used, the sum of the members' batches (<= ``bucket.batch``).
    """

    bucket: Bucket | None
    members: tuple[int, ...]
    size: int
    batch: int

    @property
    def padded_share(self) -> float:
        """Share of the bucket's units that are padding if it replays the bucket; 0.0 for a fallback."""
        return 0.0 if self.bucket is None else 1.0 - self.size / self.bucket.size


class BucketSet:
    """Buckets prepared for packing once, so that packing many groups stays cheap.

    Attributes:
        buckets: The distinct buckets, ascending by (size, batch).
    """

    __slots__ = ("buckets", "_sizes", "_cap")

    def __init__(self, buckets: Iterable[Bucket]) -> None:
        self.buckets = tuple(sorted(set(buckets)))
        self._sizes = [b.size for b in self.buckets]
        # _cap[i]: largest batch among buckets[i:], i.e. among the buckets of size >= _sizes[i].
        self._cap = [0] * (len(self.buckets) + 1)
        for i in range(len(self.buckets) - 1, -1, -1):
            self._cap[i] = max(self._cap[i + 1], self.buckets[i].batch)

    def fits(self, size: int, batch: int) -> bool:
        """Whether one bucket holds ``size`` units in ``batch`` segments."""
        return self._cap[bisect.bisect_left(self._sizes, size)] >= batch

    def smallest(self, size: int, batch: int) -> Bucket | None:
        """The smallest bucket (by size, then batch) holding ``size`` and ``batch``, if any."""
        start = bisect.bisect_left(self._sizes, size)
        return next((b for b in self.buckets[start:] if b.holds(size, batch)), None)

    def pack(self, demands: Sequence[Demand]) -> list[Pack]:
        """See :func:`pack`."""
        packs: list[Pack] = []
        bins: list[list[int]] = []  # [size, batch, *members]
        for i in sorted(range(len(demands)), key=lambda i: (-demands[i].size, -demands[i].batch, i)):
            d = demands[i]
            if not self.fits(d.size, d.batch):
                packs.append(Pack(None, (i,), d.size, d.batch))
                continue
            for b in bins:
                if self.fits(b[0] + d.size, b[1] + d.batch):
                    b[0], b[1] = b[0] + d.size, b[1] + d.batch
                    b.append(i)
                    break
            else:
                bins.append([d.size, d.batch, i])
        for size, batch, *members in bins:
            packs.append(Pack(self.smallest(size, batch), tuple(sorted(members)), size, batch))
        packs.sort(key=lambda p: p.members[0])
        return packs


def pack(demands: Sequence[Demand], buckets: Sequence[Bucket] | BucketSet) -> list[Pack]:
    """Packs requests that arrive together into as few packs as possible.

    A request that fits no bucket becomes a pack of its own, without a bucket. The others are packed first-fit
    decreasing (by size, then batch, then index): each goes to the first open bin whose combined
    (size, batch) still fits one real bucket, else opens a new bin. Each bin then gets the
    smallest bucket (by size, then batch) that holds it. Deterministic.

    Args:
        demands: One demand per request; indices are the request ids.
        buckets: Available buckets, in any order (duplicates are ignored), or a ``BucketSet``
            prepared once for many calls.

    Returns:
        Packs ordered by their first member; every request is in exactly one pack, and no
        bucket is overfilled in size or batch.
    """
    return (buckets if isinstance(buckets, BucketSet) else BucketSet(buckets)).pack(demands)


def layout(shapes: Sequence) -> tuple:
    """A pack's exact layout: its requests' items in order, however grouped into requests (the key
    of its exact-layout graph)."""
    return tuple(x for s in shapes for x in s)


def eager_groups(packs: Sequence[Pack], mergeable: Sequence[bool], cap: int) -> list[list[Pack]]:
    """Which packs run as one call.

    Packs on eager buckets gain nothing from running apart (an eager run is unpadded), and each
    call costs host work and kernel launches per layer; so the ``mergeable`` ones gather, in order,
    first-fit into groups of at most ``cap`` units. Every other pack (a graph bucket, a fallback,
    an eager pack held back) is a group of its own, in place.

    Args:
        packs: Packs from ``pack``.
        mergeable: One flag per pack.
        cap: Most units in one group (a single pack over it still forms its own group); below 1,
            nothing merges.

    Returns:
        Groups, each a list of packs; every pack in exactly one; ordered by their first pack.
    """
    if len(mergeable) != len(packs):
        raise ValueError(f"eager_groups: {len(mergeable)} flags for {len(packs)} packs")
    groups: list[list[Pack]] = []
    open_: list[tuple[int, list[Pack]]] = []  # [units, group] of groups that may take more
    for r, merge in zip(packs, mergeable):
        if merge and cap >= 1:
            for k, (units, group) in enumerate(open_):
                if units + r.size <= cap:
                    group.append(r)
                    open_[k] = (units + r.size, group)
                    break
            else:
                group = [r]
                open_.append((r.size, group))
                groups.append(group)
        else:
            groups.append([r])
    return groups
