"""Traces: JSONL round trips, line-numbered errors, the thread-safe recorder."""

import json
import threading

import pytest

from omnienc.runtime.packing import Demand
from omnienc.runtime.trace import TraceError, TraceRecord, TraceRecorder, read_trace, write_trace

VISION_LINE = '{"ts": 0.013, "modality": "vision", "grid_thw": [[1, 28, 28], [2, 16, 24]]}'
AUDIO_LINE = '{"ts": 0.02, "modality": "audio", "frames": [1000, 370]}'


def test_json_lines_match_the_format():
    v, a = TraceRecord.from_json(VISION_LINE), TraceRecord.from_json(AUDIO_LINE)
    assert v == TraceRecord(0.013, "vision", grid_thw=((1, 28, 28), (2, 16, 24)))
    assert a == TraceRecord(0.02, "audio", frames=(1000, 370))
    assert (v.to_json(), a.to_json()) == (VISION_LINE, AUDIO_LINE)
    assert (v.demand, a.demand) == (Demand(784 + 768, 3), Demand(1400, 2))


def test_round_trip(tmp_path):
    records = [
        TraceRecord(0.0, "vision", grid_thw=[[1, 14, 14]]),
        TraceRecord(0.5, "audio", frames=[537]),
        TraceRecord(1, "vision", grid_thw=([8, 28, 28], [1, 80, 46])),
    ]
    path = tmp_path / "t.jsonl"
    write_trace(path, records)
    assert read_trace(path) == records
    assert isinstance(read_trace(path)[2].ts, float)


def test_blank_lines_skipped(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(f"\n{VISION_LINE}\n   \n{AUDIO_LINE}\n")
    assert len(read_trace(path)) == 2


BAD_LINES = {
    "not json": ("{ts: 1}", "invalid JSON"),
    "not an object": ("[1, 2]", "expected a JSON object"),
    "missing ts": ('{"modality": "audio", "frames": [1]}', "missing field 'ts'"),
    "negative ts": ('{"ts": -1, "modality": "audio", "frames": [1]}', "field 'ts'"),
    "string ts": ('{"ts": "0", "modality": "audio", "frames": [1]}', "field 'ts'"),
    "bad modality": ('{"ts": 0, "modality": "text", "frames": [1]}', "field 'modality'"),
    "unknown field": ('{"ts": 0, "modality": "audio", "frames": [1], "x": 1}', "unknown field"),
    "vision without grid": ('{"ts": 0, "modality": "vision", "frames": [1]}', "needs field 'grid_thw'"),
    "audio with grid": ('{"ts": 0, "modality": "audio", "frames": [1], "grid_thw": [[1, 2, 2]]}',
                        "no 'grid_thw'"),
    "odd h": ('{"ts": 0, "modality": "vision", "grid_thw": [[1, 3, 2]]}', "field 'grid_thw'.*even"),
    "short item": ('{"ts": 0, "modality": "vision", "grid_thw": [[1, 2]]}', "field 'grid_thw'"),
    "float frames": ('{"ts": 0, "modality": "audio", "frames": [1.5]}', "field 'frames'.*integer"),
    "zero frames": ('{"ts": 0, "modality": "audio", "frames": [0]}', "field 'frames'"),
    "empty frames": ('{"ts": 0, "modality": "audio", "frames": []}', "field 'frames'.*empty"),
    "bool frames": ('{"ts": 0, "modality": "audio", "frames": [true]}', "field 'frames'.*boolean"),
}


@pytest.mark.parametrize("line, match", BAD_LINES.values(), ids=BAD_LINES.keys())
def test_bad_line_names_line_and_field(line, match, tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(f"{VISION_LINE}\n\n{line}\n{AUDIO_LINE}\n")
    with pytest.raises(TraceError, match=rf"t\.jsonl:3: .*{match}"):
        read_trace(path)


def test_missing_file(tmp_path):
    with pytest.raises(TraceError, match="not found; .*omnienc tracegen"):
        read_trace(tmp_path / "nope.jsonl")


def test_recorder_threads(tmp_path):
    path = tmp_path / "rec.jsonl"
    n_threads, per_thread = 8, 100
    with TraceRecorder(path) as rec:
        def work(k: int) -> None:
            for i in range(per_thread):
                if i % 2:
                    rec.record_audio([100 * (k + 1) + i])
                else:
                    rec.record_vision([(1, 2 * (k + 1), 2 * i + 2)])
        threads = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    records = read_trace(path)  # every line is whole and valid
    assert len(records) == n_threads * per_thread
    assert [r.ts for r in records] == sorted(r.ts for r in records)
    assert all(r.ts >= 0 for r in records)
    audio = sorted(r.frames[0] for r in records if r.modality == "audio")
    assert audio == sorted(100 * (k + 1) + i for k in range(n_threads) for i in range(1, per_thread, 2))
    with pytest.raises(ValueError, match="closed"):
        rec.record_audio([100])


def test_recorder_appends_and_validates(tmp_path):
    path = tmp_path / "rec.jsonl"
    with TraceRecorder(path) as rec:
        r = rec.record_vision([[1, 14, 14]])
        assert r.modality == "vision" and r.grid_thw == ((1, 14, 14),)
        with pytest.raises(TraceError, match="even"):
            rec.record_vision([[1, 13, 14]])
    with TraceRecorder(path) as rec:
        rec.record_audio((250,))
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[1])["frames"] == [250]
