"""The cost model on the card (marked ``gpu``; skipped without CUDA): real sizes, random weights, bf16.

The quick calibration names the card and measures every kind's points within the start-up budget;
a trace replayed through the runtime (real exact-layout graph captures) runs what the simulator says
it runs, kind by kind.
"""

from __future__ import annotations

import random
import time

import pytest
import torch

pytestmark = pytest.mark.gpu  # skipped without CUDA (conftest)


@pytest.fixture(scope="module")
def encoders():
    from omnienc.tools.simulate import build_measure_encoders

    return build_measure_encoders("cuda")


def test_quick_calibration_names_the_card_within_the_start_up_budget(encoders):
    from omnienc.runtime.calibrate import calibrate

    vis, aud, _ = encoders
    t0 = time.perf_counter()
    model = calibrate(vis, aud, quick=True)
    took = time.perf_counter() - t0
    assert took <= 20, f"the quick calibration took {took:.1f} s"
    assert model.card == torch.cuda.get_device_name() and model.meta["quick"] is True
    for m in ("vision", "audio"):
        assert model.measured_points(m, "floor") and model.measured_points(m, "capture")
        assert model.floor_ms(m) > 0 and model.capture_cost_ms(m) >= 0
    if model.meta.get("cudnn_steps"):  # big uncaptured vision calls on cuDNN: its graph builds measured
        assert model.cudnn_steps("vision") and model.build_ms("vision") >= 0


def test_simulator_runs_what_the_runtime_runs_on_the_card(encoders):
    from omnienc.runtime import RuntimeConfig
    from omnienc.runtime.batching import BatchPolicy
    from omnienc.runtime.costs import CostModel
    from omnienc.runtime.grid import BucketGrid
    from omnienc.runtime.simulator import compare, simulate
    from omnienc.tools.simulate import measure
    from omnienc.tools.tracegen import generate_trace

    records = generate_trace(seconds=6, rate=20, seed=random.randrange(10**6))
    grid = BucketGrid.default()
    config = RuntimeConfig(exact_graphs=True)  # off by default; on, the sightings' rules are shared too
    got = measure(records, grid, BatchPolicy(), config=config, encoders=encoders)
    assert got["exact_graphs"]
    sim = simulate(records, grid, BatchPolicy(), CostModel.load(card=got["card"]), config=config, card=got["card"],
                   warmup=1)
    cmp = compare(sim, got["stats"])
    for m, c in cmp["modalities"].items():
        assert {k: v["predicted"]["runs"] for k, v in c["kinds"].items()} == {
            k: v["measured"]["runs"] for k, v in c["kinds"].items()}, m
        assert all(v["predicted"] == v["measured"] for v in c["exact"].values()), (m, c["exact"])
        assert c["merged_calls"]["predicted"] == c["merged_calls"]["measured"], m
        assert c["measured_ms"] > 0
