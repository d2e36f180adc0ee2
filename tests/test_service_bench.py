"""``benchmarks/service_bench.py`` and ``tools/service_load.py`` on the CPU (a --tiny run, the
throughput run over two runtimes), and the ``--devices`` argument of ``capture``, ``bench``, ``demo``
and ``service_bench``."""

from __future__ import annotations

import argparse
import copy
import json
import math

import pytest
import torch
from conftest import hf_and_native_audio, hf_and_native_vision
from test_runtime import GRID

from omnienc.runtime import EncoderRuntime, RuntimeConfig
import service_bench

from omnienc.tools import bench, capture, demo, service_load
from omnienc.tools.models import parse_devices


def test_tiny_run_reports_every_part(tmp_path, capsys):
    out = tmp_path / "service.json"
    rc = service_bench.main(["--tiny", "--requests", "10", "--seconds", "0.15", "--latency-repeats", "3",
                             "--out", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["errors"] == []
    assert report["meta"]["devices"] == ["cpu"] and "max_wait_ms" in report["meta"]["service"]
    assert [c["device"] for c in report["capture"]] == ["cpu"]

    assert set(report["closed_loop"]) == set(service_load.WORKLOADS)
    for r in report["closed_loop"].values():
        assert r["clients"] == service_load.CLIENTS and r["requests"] > 0
        assert math.isclose(r["requests_per_s"], r["requests"] / r["seconds"])
        enc = r["encode_all_ms"]
        assert 0 < enc["p10_ms"] <= enc["median_ms"] <= enc["p90_ms"]
        assert math.isclose(r["encode_all_requests_per_s"], r["clients"] / (enc["median_ms"] / 1e3))
        assert math.isclose(r["ratio"], r["requests_per_s"] / r["encode_all_requests_per_s"])

    tp = report["throughput"]
    assert tp["requests"] == 10 and tp["vision"] + tp["audio"] == 10
    assert tp["vision_patches"] > 0 and tp["audio_frames"] > 0
    (run,) = tp["runs"]  # one device: no second run
    assert run["completed"] == 10 and run["failed"] == 0 and not run["timed_out"]
    assert [d["requests"] for d in run["per_device"]] == [10]
    assert math.isclose(run["requests_per_s"], 10 / run["wall_s"])
    assert 0 < run["per_device"][0]["gpu_busy_share"] <= 1.05  # CPU runs are timed by wall clock

    (lat,) = report["latency"]["runs"]
    assert lat["repeats"] == 3 and 0 < lat["p10_ms"] <= lat["median_ms"] <= lat["p90_ms"]
    assert lat["served_per_device"] == [3 + 3]  # warm-up requests included

    text = capsys.readouterr().out
    for heading in ("Closed loop:", "Throughput:", "Latency:"):
        assert heading in text


class Renamed:
    """A runtime under another device name: two CPU runtimes look like two devices to the service."""

    def __init__(self, runtime: EncoderRuntime, name: str):
        self._runtime, self.device = runtime, _Device(name)

    def __getattr__(self, name):
        return getattr(self._runtime, name)


class _Device:
    type = "cpu"

    def __init__(self, name: str):
        self.name = name

    def __str__(self) -> str:
        return self.name


def test_throughput_over_two_runtimes_adds_up():
    """The 2,000-request workload, scaled down, over two runtimes: every request completes once, both
    runtimes serve some, and each device's figures are that runtime's own."""
    _, vis = hf_and_native_vision()
    _, aud = hf_and_native_audio()
    room = RuntimeConfig(max_transient_bytes=2**30)  # the tiny trace has single frames larger than GRID's buckets
    rts = [Renamed(EncoderRuntime(vision=v, audio=a, grid=GRID, config=room), f"fake:{i}")
           for i, (v, a) in enumerate([(vis, aud), (copy.deepcopy(vis), copy.deepcopy(aud))])]
    records = service_load.trace_records(30, tiny=True, seed=torch.randint(1000, ()).item())
    reqs = service_load.trace_requests(records, vis, aud, pin=False)
    assert len(reqs) == 30
    run = service_load.throughput_run(rts, reqs, max_wait_ms=0.5, max_batch=2, cost=service_load.load_cost()[0])
    assert run["completed"] == 30 and run["failed"] == 0, run["first_error"]
    assert run["devices"] == ["fake:0", "fake:1"]
    served = [d["requests"] for d in run["per_device"]]
    assert sum(served) == 30 and min(served) > 0, served
    assert served == [rt.stats()["requests"] for rt in rts]
    for d, rt in zip(run["per_device"], rts):
        assert d["gpu_ms"] == pytest.approx(service_load.runtime_gpu_ms(rt)) and d["gpu_ms"] > 0
        assert d["gpu_busy_share"] == pytest.approx(d["gpu_ms"] / 1e3 / run["wall_s"])


def test_trace_requests_match_their_records():
    _, vis = hf_and_native_vision()
    _, aud = hf_and_native_audio()
    records = service_load.trace_records(40, tiny=True)
    assert records == service_load.trace_records(40, tiny=True)  # the same trace every time
    for rec, req in zip(records, service_load.trace_requests(records, vis, aud, pin=False)):
        if rec.modality == "vision":
            assert [tuple(g) for g in req.grid_thw.tolist()] == list(rec.grid_thw)
            assert req.pixel_values.shape == (sum(t * h * w for t, h, w in rec.grid_thw), vis.in_features)
        else:
            assert req.feature_lens.tolist() == list(rec.frames)
            assert req.input_features.shape == (aud.config.num_mel_bins, sum(rec.frames))
            assert req.input_features.is_contiguous()


# --- --devices ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, count, expect", [
    ("0", 1, [0]), ("0,1", 2, [0, 1]), (" 1 , 0 ", 2, [1, 0]), ("3,1", 4, [3, 1]),
])
def test_parse_devices_accepts_existing_distinct_indices(text, count, expect):
    assert parse_devices(text, count) == expect


@pytest.mark.parametrize("text, count, match", [
    ("", 2, "comma"), ("0,", 2, "comma"), ("0,,1", 2, "comma"), ("x", 2, "'x' is not a device index"),
    ("0,1.5", 2, "'1.5' is not a device index"), ("-1", 2, "'-1' is not a device index"),
    ("0,0", 2, "device 0 is given twice"), ("2", 2, r"device 2 does not exist: 2 CUDA devices visible \(0, 1\)"),
    ("0,1", 1, "device 1 does not exist: 1 CUDA device visible"), ("0", 0, "no CUDA device is visible"),
])
def test_parse_devices_names_the_bad_entry(text, count, match):
    with pytest.raises(ValueError, match=match):
        parse_devices(text, count)


def _parse(module, *argv):
    parser = argparse.ArgumentParser(prog="omnienc")
    module.register(parser.add_subparsers())
    return parser.parse_args(list(argv))


MISSING = str(torch.cuda.device_count())  # the first index that does not exist here


@pytest.mark.parametrize("module, name", [(capture, "capture"), (bench, "bench"), (demo, "demo")])
@pytest.mark.parametrize("devices, match", [
    (MISSING, f"device {MISSING} does not exist"), ("0,a", "'a' is not a device index"),
])
def test_commands_refuse_bad_devices(module, name, devices, match, capsys):
    args = _parse(module, name, "--devices", devices)
    assert args.func(args) == 2
    assert match in capsys.readouterr().err


@pytest.mark.parametrize("module, name", [(capture, "capture"), (bench, "bench"), (demo, "demo")])
def test_commands_refuse_device_and_devices_together(module, name, capsys):
    args = _parse(module, name, "--device", "cpu", "--devices", "0")
    assert args.func(args) == 2
    assert "--device or --devices, not both" in capsys.readouterr().err


def test_other_device_arguments_are_checked(capsys):
    args = _parse(capture, "capture", "--calibrate", "-o", "x.yaml", "--devices", "0")
    assert args.func(args) == 2 and "--calibrate measures one device" in capsys.readouterr().err
    args = _parse(bench, "bench", "--service-requests", "10")
    assert args.func(args) == 2 and "--service-requests needs --devices" in capsys.readouterr().err
    assert service_bench.main(["--devices", MISSING]) == 2
    assert f"device {MISSING} does not exist" in capsys.readouterr().err
    assert service_bench.main(["--tiny", "--parts", "throughput,nope"]) == 2
    assert "unknown part(s) ['nope']" in capsys.readouterr().err
