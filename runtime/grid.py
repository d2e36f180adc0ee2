"""Bucket grid: the (size, batch) shapes the runtime captures one CUDA graph for.

A grid lives on disk as YAML and in code as validated frozen dataclasses::

    dtype: bfloat16
    vision:                         # leave a modality out to run it eagerly only
      patches: [1024, 4096, 16384]  # ViT patch tokens per replay (4 patches per output token)
      batch: [1, 4, 16]             # attention segments per replay (one per frame)
    audio:
      frames: [800, 3200, 12800]    # mel frames per replay, multiples of 100
      batch: [1, 8, 32]             # audios per replay

Buckets are the cross product of the two lists, or an explicit list
``buckets: [{patches: 1024, batch: 1}, ...]`` (``frames`` for audio) instead of the lists.
A segment takes at least 4 patches (a frame) or 100 frames (an audio), so a bucket's batch is at
most size / 4 (vision) or size / 100 (audio): an explicit bucket beyond that is an error; in the
cross product each batch is capped at what the size holds (it packs the same), and a batch that
even the largest size cannot hold is an error. Sizes are at most ``MAX_SIZE`` (262,144 patches,
204,800 frames): a request larger than every bucket runs eagerly, it needs no bucket.
Duplicate YAML keys and files that are not UTF-8 are errors naming the file (and the line).
An optional ``graphs_up_to: N`` per modality captures graphs only for buckets of size <= N; larger
buckets still pack requests but run them eagerly, unpadded (where the GPU is busy enough that
launch overhead hides and padding only costs).
Every validation error is a :class:`GridError` that says what is wrong and how to fix it.
"""

from __future__ import annotations

import importlib.resources
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

AUDIO_CHUNK_FRAMES = 100  # the audio encoder cuts every audio into chunks of 100 mel frames
AUDIO_WINDOW_FRAMES = 800  # and attends within windows of this many frames (Qwen3-Omni's n_window_infer)
PATCHES_PER_TOKEN = 4  # the vision merger turns 2x2 patches into one output token
DTYPES = ("bfloat16", "float16", "float32")
# modality -> (YAML key of the size axis, unit the size must be a multiple of, what one unit is).
# The unit is also the least one segment takes (a vision frame has even h and w: >= 4 patches; an
# audio takes >= one 100-frame chunk), so a bucket holds at most size / unit segments.
_AXES = {
    "vision": ("patches", PATCHES_PER_TOKEN, "4 patches merge into one output token"),
    "audio": ("frames", AUDIO_CHUNK_FRAMES, "audio is encoded in chunks of 100 mel frames"),
}
# Largest bucket size: 16x the default grid's largest bucket. A bucket's static buffers and graph
# memory grow with its size (at these bounds about 9.4 GB (vision) and 13.4 GB (audio) of bf16
# activations by ``estimate_activation_bytes``); a larger request needs no bucket: it runs eagerly.
MAX_SIZE = {"vision": 262_144, "audio": 204_800}


class GridError(ValueError):
    """An invalid bucket grid; the message says what is wrong and how to fix it."""


@dataclass(frozen=True, slots=True, order=True)
class Bucket:
    """One captured graph shape; buckets order by (size, batch).

    Attributes:
        size: Capacity in units: ViT patches (vision) or mel frames (audio).
        batch: Capacity in segments: frames of all images/videos (vision) or audios (audio).
    """

    size: int
    batch: int

    def holds(self, size: int, batch: int) -> bool:
        """Whether a replay using ``size`` units in ``batch`` segments fits this bucket."""
        return size <= self.size and batch <= self.batch


def check_int(where: str, value: Any, minimum: int | None = None, error: type[ValueError] = GridError) -> int:
    """Returns ``value`` as an int (ints, numpy ints, integer 0-d tensors), refusing bools, floats
    and strings, and with ``minimum`` smaller values; raises ``error`` naming ``where``.

    The one integer check of the grid (``GridError``) and of packing (``ValueError``).
    """
    if isinstance(value, bool):
        raise error(f"{where}: {value!r} is a boolean; write a positive integer")
    try:
        v = operator.index(value)
    except TypeError:
        raise error(f"{where}: {value!r} is not an integer; write a positive integer") from None
    if minimum is not None and v < minimum:
        raise error(f"{where}: {v} must be >= {minimum}")
    return v


def _check_size(modality: str, where: str, size: Any) -> int:
    """Validates one bucket size of ``modality`` (type, one item at least, unit multiple)."""
    key, unit, why = _AXES[modality]
    size = check_int(where, size)
    if size < unit:
        raise GridError(f"{where}: {size} {key} cannot hold one item; use at least {unit}")
    if size > MAX_SIZE[modality]:
        raise GridError(
            f"{where}: {size} {key} is above the largest bucket size, {MAX_SIZE[modality]} (its buffers and "
            f"graph memory grow with the size); use at most {MAX_SIZE[modality]}: larger requests need no "
            "bucket, they run eagerly"
        )
    if size % unit:
        lo, hi = size // unit * unit, (size // unit + 1) * unit
        raise GridError(f"{where}: {size} is not a multiple of {unit} ({why}); use {lo} or {hi}")
    return size


def _check_batch(where: str, batch: Any) -> int:
    """Validates one bucket batch (a positive integer)."""
    batch = check_int(where, batch)
    if batch < 1:
        raise GridError(f"{where}: batch {batch} cannot hold one item; use at least 1")
    return batch


def _check_fits(modality: str, where: str, bucket: Bucket, size_note: str = "") -> None:
    """Refuses a bucket whose batch its size cannot hold (each segment takes at least one unit)."""
    key, unit, _ = _AXES[modality]
    most = bucket.size // unit
    if bucket.batch > most:
        segment = "a frame has even height and width" if modality == "vision" else "an audio takes whole chunks"
        raise GridError(
            f"{where}: batch {bucket.batch} cannot fit in {bucket.size} {key}{size_note}: each segment takes at "
            f"least {unit} {key} ({segment}); use batch <= {most} or {key} >= {bucket.batch * unit}"
        )


@dataclass(frozen=True)
class ModalityGrid:
    """The buckets of one modality.

    Attributes:
        modality: ``"vision"`` or ``"audio"``.
        buckets: Non-empty, sorted ascending by (size, batch), no duplicates (sorted on
            construction). Sizes are multiples of 4 patches (vision) or 100 frames (audio).
        graphs_up_to: None (every bucket is a CUDA graph) or a size: buckets larger than it are
            "eager buckets" -- requests are packed into them the same way, but run eagerly on
            exactly the packed requests, without padding, and nothing is captured for them.
    """

    modality: str
    buckets: tuple[Bucket, ...]
    graphs_up_to: int | None = None

    def __post_init__(self) -> None:
        if self.modality not in _AXES:
            raise GridError(f"unknown modality {self.modality!r}; use 'vision' or 'audio'")
        key = _AXES[self.modality][0]
        if not self.buckets:
            raise GridError(
                f"{self.modality}: no buckets; give at least one {key} size and one batch, "
                f"or leave '{self.modality}' out of the grid to run it eagerly only"
            )
        for b in self.buckets:
            if not isinstance(b, Bucket):
                raise GridError(f"{self.modality}: {b!r} is not a Bucket; pass Bucket(size, batch)")
            where = f"{self.modality} bucket {{{key}: {b.size}, batch: {b.batch}}}"
            _check_size(self.modality, where, b.size)
            _check_batch(where, b.batch)
            _check_fits(self.modality, where, b)
        buckets = tuple(sorted(self.buckets))
        for a, b in zip(buckets, buckets[1:]):
            if a == b:
                raise GridError(
                    f"{self.modality}: bucket {{{key}: {a.size}, batch: {a.batch}}} is listed "
                    "twice; remove the duplicate"
                )
        object.__setattr__(self, "buckets", buckets)
        if self.graphs_up_to is not None:
            object.__setattr__(self, "graphs_up_to", check_int(f"{self.modality}.graphs_up_to", self.graphs_up_to))
            if self.graphs_up_to <= 0:
                raise GridError(
                    f"{self.modality}.graphs_up_to: {self.graphs_up_to} must be a positive size; "
                    "leave it out to capture every bucket"
                )

    def is_graph(self, bucket: Bucket) -> bool:
        """Whether ``bucket`` is captured as a CUDA graph (else it runs eagerly, unpadded)."""
        return self.graphs_up_to is None or bucket.size <= self.graphs_up_to

    @property
    def graph_buckets(self) -> tuple[Bucket, ...]:
        """The buckets captured as graphs."""
        return tuple(b for b in self.buckets if self.is_graph(b))

    @property
    def max_size(self) -> int:
        """Largest size of any bucket; static input buffers are allocated at this size."""
        return max(b.size for b in self.buckets)

    @property
    def max_batch(self) -> int:
        """Largest batch of any bucket (possibly of another bucket than ``max_size``)."""
        return max(b.batch for b in self.buckets)

    @classmethod
    def from_dict(cls, modality: str, d: Any) -> ModalityGrid:
        """Builds a grid from the YAML mapping of one modality (lists or explicit ``buckets``)."""
        if modality not in _AXES:
            raise GridError(f"unknown modality {modality!r}; use 'vision' or 'audio'")
        key = _AXES[modality][0]
        if not isinstance(d, Mapping):
            raise GridError(
                f"{modality}: expected a mapping with '{key}' and 'batch' lists, got {d!r}; "
                f"write e.g. '{modality}: {{{key}: [...], batch: [...]}}'"
            )
        unknown = sorted(set(d) - {key, "batch", "buckets", "graphs_up_to"})
        if unknown:
            raise GridError(
                f"{modality}: unknown key(s) {unknown}; allowed: '{key}', 'batch', 'buckets', 'graphs_up_to'"
            )
        up_to = d.get("graphs_up_to")
        if "buckets" in d:
            if key in d or "batch" in d:
                raise GridError(
                    f"{modality}: give either the '{key}'/'batch' lists or 'buckets', not both; "
                    "remove one of them"
                )
            return cls(modality, tuple(_explicit_buckets(modality, d["buckets"])), up_to)
        if key not in d or "batch" not in d:
            missing = key if key not in d else "batch"
            raise GridError(
                f"{modality}: missing '{missing}'; give both '{key}' and 'batch' lists "
                "(their cross product), or an explicit 'buckets' list"
            )
        sizes = _unique_list(modality, key, d[key], lambda w, v: _check_size(modality, w, v))
        batches = _unique_list(modality, "batch", d["batch"], _check_batch)
        unit, largest = _AXES[modality][1], max(sizes)
        for i, b in enumerate(batches):
            _check_fits(modality, f"{modality}.batch[{i}]", Bucket(largest, b), " (the largest size listed)")
        # Each size with each batch, the batch capped at what the size holds (same packing decisions).
        buckets = {Bucket(s, min(b, s // unit)) for s in sizes for b in batches}
        return cls(modality, tuple(buckets), up_to)

    def to_dict(self) -> dict[str, Any]:
        """The YAML mapping: the two lists when the buckets are their cross product, else ``buckets``."""
        key = _AXES[self.modality][0]
        sizes = sorted({b.size for b in self.buckets})
        batches = sorted({b.batch for b in self.buckets})
        if len(sizes) * len(batches) == len(self.buckets):
            d: dict[str, Any] = {key: sizes, "batch": batches}
        else:
            d = {"buckets": [{key: b.size, "batch": b.batch} for b in self.buckets]}
        if self.graphs_up_to is not None:
            d["graphs_up_to"] = self.graphs_up_to
        return d


def _unique_list(modality: str, key: str, values: Any, check: Callable[[str, Any], int]) -> list[int]:
    """Validates a non-empty list of distinct values of ``modality.key``."""
    where = f"{modality}.{key}"
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise GridError(f"{where}: expected a list like [1, 4, 16], got {values!r}")
    out = [check(f"{where}[{i}]", v) for i, v in enumerate(values)]
    if not out:
        raise GridError(f"{where}: empty list; give at least one value, or leave '{modality}' out")
    for v in out:
        if out.count(v) > 1:
            raise GridError(f"{where}: {v} is listed twice; remove the duplicate")
    return out


def _explicit_buckets(modality: str, items: Any) -> list[Bucket]:
    """Validates an explicit ``buckets: [{<key>: n, batch: m}, ...]`` list."""
    key = _AXES[modality][0]
    where = f"{modality}.buckets"
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Iterable):
        raise GridError(f"{where}: expected a list like [{{{key}: 1024, batch: 1}}], got {items!r}")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping) or set(item) != {key, "batch"}:
            raise GridError(
                f"{where}[{i}]: expected {{{key}: <int>, batch: <int>}}, got {item!r}; "
                f"give exactly the keys '{key}' and 'batch'"
            )
        bucket = Bucket(
            _check_size(modality, f"{where}[{i}].{key}", item[key]),
            _check_batch(f"{where}[{i}].batch", item["batch"]),
        )
        _check_fits(modality, f"{where}[{i}]", bucket)
        out.append(bucket)
    if not out:
        raise GridError(f"{where}: empty list; give at least one bucket, or leave '{modality}' out")
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is a ``GridError`` (the
    plain loader keeps the last value silently). Merge keys (``<<``) may still be overridden."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                mark = key_node.start_mark
                try:
                    if key in first:
                        raise GridError(
                            f"line {mark.line + 1}, column {mark.column + 1}: key {key!r} is given twice "
                            f"(first at line {first[key]}); remove one"
                        )
                    first[key] = mark.line + 1
                except TypeError:  # an unhashable key: the base class reports it
                    continue
        return super().construct_mapping(node, deep)


@dataclass(frozen=True)
class BucketGrid:
    """All buckets of the runtime.

    Attributes:
        dtype: Activation dtype of the captured graphs: ``"bfloat16"``, ``"float16"`` or
            ``"float32"``.
        vision: Vision buckets; None runs vision eagerly only.
        audio: Audio buckets; None runs audio eagerly only.
    """

    dtype: str = "bfloat16"
    vision: ModalityGrid | None = None
    audio: ModalityGrid | None = None

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise GridError(f"dtype: unknown dtype {self.dtype!r}; use one of {list(DTYPES)}")
        for name in ("vision", "audio"):
            g = getattr(self, name)
            if g is not None and g.modality != name:
                raise GridError(f"{name}: got a grid of modality {g.modality!r}; pass a {name} grid")

    @property
    def num_graphs(self) -> int:
        """Number of CUDA graphs the runtime captures (one per bucket up to ``graphs_up_to``)."""
        return sum(len(g.graph_buckets) for g in (self.vision, self.audio) if g is not None)

    def modality(self, name: str) -> ModalityGrid | None:
        """The grid of modality ``name`` (``"vision"`` or ``"audio"``)."""
        if name not in _AXES:
            raise GridError(f"unknown modality {name!r}; use 'vision' or 'audio'")
        return getattr(self, name)

    @classmethod
    def from_dict(cls, d: Any) -> BucketGrid:
        """Builds a validated grid from the parsed YAML mapping."""
        if d is None:
            d = {}
        if not isinstance(d, Mapping):
            raise GridError(f"expected a mapping with 'dtype', 'vision', 'audio', got {d!r}")
        unknown = sorted(set(d) - {"dtype", "vision", "audio"})
        if unknown:
            raise GridError(
                f"unknown top-level key(s) {unknown}; allowed: 'dtype', 'vision', 'audio'"
            )
        return cls(
            dtype=d.get("dtype", "bfloat16"),
            vision=None if d.get("vision") is None else ModalityGrid.from_dict("vision", d["vision"]),
            audio=None if d.get("audio") is None else ModalityGrid.from_dict("audio", d["audio"]),
        )

    def to_dict(self) -> dict[str, Any]:
        """The YAML mapping; a modality without buckets is left out."""
        d: dict[str, Any] = {"dtype": self.dtype}
        for name in ("vision", "audio"):
            g = getattr(self, name)
            if g is not None:
                d[name] = g.to_dict()
        return d

    @classmethod
    def from_yaml(cls, path: str | Path) -> BucketGrid:
        """Loads and validates a YAML grid file; errors name the file. An empty file is an error
        (every request would silently run as a fallback); ``dtype: ...`` alone means no buckets."""
        if Path(path).is_dir():
            raise GridError(f"grid file {str(path)!r} is a folder; name a YAML file "
                            "(e.g. omnienc/configs/qwen3_omni.yaml)")
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise GridError(
                f"grid file {str(path)!r} not found; pass an existing YAML file "
                "(e.g. omnienc/configs/qwen3_omni.yaml)"
            ) from None
        except UnicodeDecodeError as e:
            raise GridError(
                f"grid file {str(path)!r}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); "
                "save it as UTF-8"
            ) from None
        except OSError as e:
            raise GridError(f"cannot read grid file {str(path)!r}: {e}") from None
        return cls._from_text(text, str(path))

    @classmethod
    def _from_text(cls, text: str, source: str) -> BucketGrid:
        try:
            d = yaml.load(text, Loader=_UniqueKeyLoader)
        except yaml.YAMLError as e:
            mark, problem = getattr(e, "problem_mark", None), getattr(e, "problem", None) or e
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise GridError(f"{source}: invalid YAML{where}: {problem}; fix the syntax") from None
        except GridError as e:  # a duplicate key
            raise GridError(f"{source}: {e}") from None
        if d is None:  # a mapping without modalities is a deliberate eager-only grid; nothing at all is not
            raise GridError(
                f"{source}: the file is empty (no YAML, or only comments): every request would run eagerly "
                "as a fallback; give at least one modality, e.g. 'vision: {patches: [1024, 4096], batch: [1, 8]}', "
                "or write 'dtype: bfloat16' to mean no buckets at all"
            )
        try:
            return cls.from_dict(d)
        except GridError as e:
            raise GridError(f"{source}: {e}") from None

    def to_yaml(self, path: str | Path | None = None, header: str | None = None) -> str:
        """Returns the YAML text (written to ``path`` when given), ``header`` as comment lines."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)
        if header:
            text = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines()) + text
        if path is not None:
            from omnienc.runtime.atomic import write_text_atomically

            write_text_atomically(path, text)  # whole or not at all
        return text

    @classmethod
    def default(cls) -> BucketGrid:
        """The packaged default grid, ``omnienc/configs/qwen3_omni.yaml``."""
        res = importlib.resources.files("omnienc.configs").joinpath("qwen3_omni.yaml")
        return cls._from_text(res.read_text(encoding="utf-8"), "omnienc/configs/qwen3_omni.yaml")

