"""The start-up calibration as an engine runs it, after its capture (a record of a GPU call).

    python benchmarks/records/startup_calibration_probe.py [--out FILE]

M*'s encoder node (``integrations/mstar.py``, ``calibrate: true``) captures the serving grid, then
calibrates (quick) in the same process. On a machine just started, the first ``omnienc capture
--calibrate-quick`` process took longer than the next (docs/BENCHMARKS.md); here, in one process:
the encoders built, the default grid captured, then the quick calibration, each timed, and a second
quick calibration after it. One JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from omnienc.runtime import EncoderRuntime
from omnienc.runtime.calibrate import PROBES, calibrate
from omnienc.runtime.grid import BucketGrid
from omnienc.tools.models import build_encoders


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=None)
    args = p.parse_args()
    cuda = torch.cuda.is_available()
    device, sizes = ("cuda", "real") if cuda else ("cpu", "reduced")
    t0 = time.perf_counter()
    vis, aud = build_encoders(None, device, "bfloat16" if cuda else "float32", sizes)
    built = time.perf_counter() - t0
    rt = EncoderRuntime(vision=vis, audio=aud, grid=BucketGrid.default(), device=device)
    t1 = time.perf_counter()
    rt.capture(progress=False)
    captured = time.perf_counter() - t1
    probes = None if cuda else "reduced"
    times = []
    for _ in range(2):
        t2 = time.perf_counter()
        calibrate(vis, aud, PROBES[probes] if probes else None, quick=True, command="startup_calibration_probe")
        times.append(time.perf_counter() - t2)
    line = json.dumps({"card": torch.cuda.get_device_name() if cuda else "cpu", "build_s": round(built, 2),
                       "capture_s": round(captured, 2), "calibrate_s": [round(t, 2) for t in times]})
    print(line)
    if args.out:
        with open(args.out, "w") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
