"""Where the H100's measured trace time parts from the calibrated prediction (a record of a GPU call).

    python benchmarks/records/prediction_gap_probe.py TRACE [--passes 3] [--out DIR]

On one process and one card, with the clocks, power and temperature sampled by ``nvidia-smi``
throughout: the quick calibration; the default grid measured on TRACE ``--passes`` times
(``omnienc simulate --measure``'s measurement, each a fresh runtime), each compared with the
prediction; then the quick calibration again, after that load, and once more with each point
warmed up ``--warm-ms`` (``calibrate(warm_ms=)``), and the last pass compared with both. One JSON
line per phase: its time span, the card's median SM clock, mean power and highest temperature over
it, the clock-event reasons seen, and for a measured pass the predicted and measured ms per
modality and kind of run (and for the last pass, per bucket); the raw samples in ``smi.csv``.

What it separates: a process warming up (the passes' errors shrink), sustained load (clocks or
power fall under the passes against the calibration, or the second calibration is slower than the
first), and pricing (the error stays with steady clocks, and the second model does not close it).
``--dry-run`` runs the steps on the CPU with reduced encoders and no sampler: a check of the script.
"""

from __future__ import annotations

import argparse
import atexit
import csv
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

FIELDS = "timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu,clocks_event_reasons.active"


class Sampler:
    """``nvidia-smi`` every 100 ms into a file; ``span(t0, t1)`` summarises the samples between."""

    def __init__(self, enabled: bool) -> None:
        self.file = tempfile.NamedTemporaryFile("w+", suffix=".csv", delete=False)
        self.proc = None
        if enabled:
            fields = FIELDS
            once = subprocess.run(["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader"],
                                  capture_output=True, text=True)
            if once.returncode != 0:  # a driver before the field's rename
                fields = fields.replace("clocks_event_reasons", "clocks_throttle_reasons")
            self.proc = subprocess.Popen(["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader,nounits",
                                          "-lms", "100"], stdout=self.file, stderr=subprocess.DEVNULL)
        self.starts: list[float] = []

    def rows(self) -> list[tuple[float, list[str]]]:
        self.file.flush()
        out = []
        with open(self.file.name, encoding="utf-8") as f:
            for row in csv.reader(f):
                if len(row) < 6:
                    continue
                try:
                    t = time.mktime(time.strptime(row[0].strip().split(".")[0], "%Y/%m/%d %H:%M:%S"))
                    frac = float("0." + row[0].strip().split(".")[1]) if "." in row[0] else 0.0
                    out.append((t + frac, [c.strip() for c in row[1:]]))
                except (ValueError, IndexError):
                    continue
        return out

    def span(self, t0: float, t1: float) -> dict:
        rows = [r for t, r in self.rows() if t0 <= t <= t1]
        if not rows:
            return {"samples": 0}

        def num(i):
            vals = []
            for r in rows:
                try:
                    vals.append(float(r[i]))
                except ValueError:
                    pass
            return vals

        sm, power, temp = num(0), num(2), num(3)
        return {"samples": len(rows), "sm_mhz_median": statistics.median(sm) if sm else None,
                "sm_mhz_min": min(sm) if sm else None,
                "power_w_mean": round(statistics.fmean(power), 1) if power else None,
                "temp_c_max": max(temp) if temp else None, "reasons": sorted({r[4] for r in rows})}

    def close(self, keep: str | None = None) -> None:
        """Stops the sampler; ``keep``: where to copy the raw samples."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()
        self.file.flush()
        if keep:
            shutil.copyfile(self.file.name, keep)


def emit(out, **kw):
    line = json.dumps(kw)
    print(line, flush=True)
    if out:
        with open(out, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("trace")
    p.add_argument("--passes", type=int, default=3)
    p.add_argument("--warm-ms", type=float, default=300.0, help="the third calibration's warm-up per point")
    p.add_argument("--out", default=None, help="a folder for prediction_gap.jsonl")
    p.add_argument("--dry-run", action="store_true", help="the CPU, reduced encoders, no sampler")
    a = p.parse_args()
    if a.out:
        Path(a.out).mkdir(parents=True, exist_ok=True)
    out = a.out and str(Path(a.out) / "prediction_gap.jsonl")

    from omnienc.runtime.batching import BatchPolicy
    from omnienc.runtime.calibrate import PROBES, calibrate
    from omnienc.runtime.config import RuntimeConfig
    from omnienc.runtime.grid import BucketGrid
    from omnienc.runtime.simulator import compare, simulate
    from omnienc.runtime.trace import read_trace
    from omnienc.tools.simulate import build_measure_encoders, measure

    cuda = torch.cuda.is_available() and not a.dry_run
    sampler = Sampler(cuda)
    atexit.register(sampler.close, a.out and str(Path(a.out) / "smi.csv"))  # also when a timeout ends the probe
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(124))
    device = "cuda" if cuda else "cpu"
    encoders = build_measure_encoders(device)
    vis, aud, _ = encoders
    records = read_trace(a.trace)
    if a.dry_run:
        records = records[:40]
    grid, batching, config = BucketGrid.default(), BatchPolicy(), RuntimeConfig()
    probes = PROBES["quick" if cuda else "reduced"]

    def calibration(name, warm_ms=0.0):
        t0 = time.time()
        model = calibrate(vis, aud, probes, quick=True, warm_ms=warm_ms)
        t1 = time.time()
        emit(out, phase=name, s=round(t1 - t0, 1), card=model.card, **sampler.span(t0, t1),
             replay_ms={f"{m}:{q.size}x{q.batch}": round(q.ms, 3) for m in ("vision", "audio")
                        for q in model.surfaces[m, "replay"].probes},
             eager_ms={f"{m}:{q.size}x{q.batch}": round(q.ms, 3) for m in ("vision", "audio")
                       for q in model.surfaces[m, "eager"].probes})
        return model

    def errors(model, got, buckets=False):
        report = simulate(records, grid, batching, model, config=config.replace(exact_graphs=got["exact_graphs"]),
                          card=got["card"], warmup=1, bound_units=got["bound_units"])
        cmp = compare(report, got["stats"])
        res = {}
        for m, c in cmp["modalities"].items():
            res[m] = {"predicted_ms": round(c["predicted_ms"], 1), "measured_ms": round(c["measured_ms"], 1),
                      "error": c["error"] and round(c["error"], 4),
                      "kinds": {k: [round(v["predicted"]["ms"], 1), round(v["measured"]["ms"], 1)]
                                for k, v in c["kinds"].items() if v["measured"]["runs"]}}
            if buckets:
                res[m]["buckets"] = {k: [v["measured"]["runs"], round(v["predicted"]["ms"], 1),
                                         round(v["measured"]["ms"], 1)] for k, v in c["buckets"].items()
                                     if v["measured"]["runs"]}
        return res

    model = calibration("calibrate1")
    got = None
    for i in range(a.passes):
        t0 = time.time()
        got = measure(records, grid, batching, device, config, encoders=encoders)
        t1 = time.time()
        emit(out, phase=f"pass{i + 1}", s=round(t1 - t0, 1), wall_s=round(got["wall_s"], 2), **sampler.span(t0, t1),
             failed=got["failed"], vs_calibrate1=errors(model, got, buckets=i == a.passes - 1))
    model2 = calibration("calibrate2")
    if got is not None:
        emit(out, phase=f"pass{a.passes}_vs_calibrate2", vs_calibrate2=errors(model2, got))
    model3 = calibration("calibrate_warm", warm_ms=a.warm_ms)
    if got is not None:
        emit(out, phase=f"pass{a.passes}_vs_calibrate_warm", warm_ms=a.warm_ms, vs_calibrate_warm=errors(model3, got))
    return 0


if __name__ == "__main__":
    sys.exit(main())
