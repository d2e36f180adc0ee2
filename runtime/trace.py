"""Request traces: JSON lines of what arrived when, for the simulator (``omnienc simulate``) and
the tuner.

One record per line::

    {"ts": 0.013, "modality": "vision", "grid_thw": [[1, 28, 28], [2, 16, 24]]}
    {"ts": 0.020, "modality": "audio", "frames": [1000, 370]}

``ts`` is seconds since the trace started; ``grid_thw`` is in patches (t, h, w); ``frames`` are
mel frame counts.
"""

from __future__ import annotations

import json
import math
import operator
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from omnienc.runtime.packing import Demand, audio_demand, vision_demand

MODALITIES = ("vision", "audio")


class TraceError(ValueError):
    """An invalid trace record or file; the message names the line and field."""


@dataclass(frozen=True)
class TraceRecord:
    """One request of a trace.

    Attributes:
        ts: Arrival time in seconds since the trace started, finite and >= 0.
        modality: ``"vision"`` or ``"audio"``.
        grid_thw: Vision only: one (t, h, w) per item, in patches (h, w even).
        frames: Audio only: mel frame count of each audio.
    """

    ts: float
    modality: str
    grid_thw: tuple[tuple[int, int, int], ...] | None = None
    frames: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        ts = self.ts
        if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts) or ts < 0:
            raise TraceError(f"field 'ts': {ts!r} must be a finite number of seconds >= 0")
        object.__setattr__(self, "ts", float(ts))
        if self.modality not in MODALITIES:
            raise TraceError(f"field 'modality': {self.modality!r} must be 'vision' or 'audio'")
        field, other = ("grid_thw", "frames") if self.modality == "vision" else ("frames", "grid_thw")
        value = getattr(self, field)
        if value is None or getattr(self, other) is not None:
            raise TraceError(f"a {self.modality} record needs field '{field}' and no '{other}'")
        try:
            if self.modality == "vision":
                items = [tuple(x) for x in value]
                vision_demand(items)  # validates: positive ints (not bools), even h and w
                object.__setattr__(self, field, tuple(tuple(map(operator.index, x)) for x in items))
            else:
                items = list(value)
                audio_demand(items)
                object.__setattr__(self, field, tuple(map(operator.index, items)))
        except (TypeError, ValueError) as e:
            raise TraceError(f"field '{field}': {e}") from None

    @property
    def shape(self) -> tuple:
        """The request's shape as the runtime validates it: its (t, h, w) items, or its clips' frame
        counts (a pack's exact layout is its members' shapes' items, ``packing.layout``)."""
        return self.grid_thw if self.modality == "vision" else self.frames

    @property
    def demand(self) -> Demand:
        """The request's demand (see ``vision_demand`` and ``audio_demand``)."""
        if self.modality == "vision":
            return vision_demand(self.grid_thw)
        return audio_demand(self.frames)

    def to_json(self) -> str:
        """One JSON line (without the newline)."""
        d: dict[str, Any] = {"ts": self.ts, "modality": self.modality}
        if self.modality == "vision":
            d["grid_thw"] = [list(x) for x in self.grid_thw]
        else:
            d["frames"] = list(self.frames)
        return json.dumps(d)

    @classmethod
    def from_json(cls, line: str) -> TraceRecord:
        """Parses and validates one JSON line; errors name the field."""
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            raise TraceError(f"invalid JSON ({e})") from None
        if not isinstance(d, dict):
            raise TraceError(f"expected a JSON object, got {line.strip()!r}")
        unknown = sorted(set(d) - {"ts", "modality", "grid_thw", "frames"})
        if unknown:
            raise TraceError(f"unknown field(s) {unknown}; allowed: ts, modality, grid_thw, frames")
        for key in ("ts", "modality"):
            if key not in d:
                raise TraceError(f"missing field '{key}'")
        return cls(d["ts"], d["modality"], d.get("grid_thw"), d.get("frames"))


def read_trace(path: str | Path) -> list[TraceRecord]:
    """Reads and validates a JSONL trace; blank lines are skipped.

    Raises:
        TraceError: The file is missing, a folder, not UTF-8 text, holds no record (nothing to
            simulate or tune on), or a line is invalid (the message names the file, the line
            number and the field).
    """
    if Path(path).is_dir():
        raise TraceError(f"trace file {str(path)!r} is a folder; name a JSONL file")
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise TraceError(
            f"trace file {str(path)!r} not found; record one with TraceRecorder or generate one "
            "with `omnienc tracegen -o trace.jsonl`"
        ) from None
    except UnicodeDecodeError as e:
        raise TraceError(
            f"trace file {str(path)!r}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); "
            "a trace is JSON lines"
        ) from None
    except OSError as e:
        raise TraceError(f"cannot read trace file {str(path)!r}: {e}") from None
    records = []
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                records.append(TraceRecord.from_json(line))
            except TraceError as e:
                raise TraceError(f"{path}:{n}: {e}") from None
    if not records:
        raise TraceError(
            f"trace file {str(path)!r} holds no requests ({'empty' if not lines else 'only blank lines'}); "
            "a trace needs at least one JSON line, e.g. "
            '{"ts": 0.0, "modality": "audio", "frames": [1000]}'
        )
    return records


def write_trace(path: str | Path, records: Iterable[TraceRecord]) -> None:
    """Writes records as JSON lines, replacing the file whole or not at all (a failure while
    writing leaves the old file, if any, as it was)."""
    from omnienc.runtime.atomic import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.writelines(r.to_json() + "\n" for r in records)


class TraceRecorder:
    """Thread-safe JSONL appender of the requests a runtime sees.

    ``ts`` is seconds (rounded to microseconds) since the recorder was created, from
    ``time.monotonic``; lines are written in ``ts`` order and flushed one by one, so a trace
    survives a crash. Use as a context manager or call ``close()``.

    Args:
        path: The JSONL file; appended to if it exists.
    """

    def __init__(self, path: str | Path) -> None:
        if Path(path).is_dir():
            raise TraceError(f"trace file {str(path)!r} is a folder; name a JSONL file to append to")
        self._file = open(path, "a", encoding="utf-8")
        self._lock = threading.Lock()
        self._t0 = time.monotonic()

    def record_vision(self, grid_thw: Iterable[Sequence[int]]) -> TraceRecord:
        """Records a vision request of (t, h, w) items; returns the record written."""
        return self._write("vision", grid_thw=grid_thw)

    def record_audio(self, frames: Iterable[int]) -> TraceRecord:
        """Records an audio request of mel frame counts; returns the record written."""
        return self._write("audio", frames=frames)

    def _write(self, modality: str, **items: Any) -> TraceRecord:
        with self._lock:
            if self._file.closed:
                raise ValueError("TraceRecorder is closed")
            rec = TraceRecord(round(time.monotonic() - self._t0, 6), modality, **items)
            self._file.write(rec.to_json() + "\n")
            self._file.flush()
        return rec

    def close(self) -> None:
        """Closes the file; later records raise ValueError."""
        with self._lock:
            self._file.close()

    def __enter__(self) -> TraceRecorder:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
