"""The bucketed CUDA-graph runtime: grid, packing, capture/replay, eager fallback, service.

The pure planning modules (config, grid, packing, batching, costs, trace, simulate, tune) import
without torch; the runtime, service and request types load on first use (calibration:
``runtime.calibrate``), so ``omnienc simulate`` and ``tune`` start instantly.
"""

from importlib import import_module

from .batching import BatchPolicy, group_arrivals
from .config import Attention, RuntimeConfig
from .costs import CostError, CostModel, estimate_activation_bytes, estimate_flops
from .grid import Bucket, BucketGrid, GridError, ModalityGrid
from .packing import BucketSet, Demand, Pack, audio_demand, pack, vision_demand
from .simulate import SimReport, simulate
from .stats import BucketStats, ModalityStats
from .trace import TraceError, TraceRecord, TraceRecorder, read_trace, write_trace
from .tune import TuneResult

_LAZY = {
    "EncoderRuntime": ".runtime",
    "EncoderService": ".service",
    "ServiceClosed": ".service",
    "ServiceBusy": ".service",
    "Batch": ".runtime",
    "Modality": ".modality",
    "VisionRequest": ".requests",
    "AudioRequest": ".requests",
    "VisionOutput": ".requests",
    "AudioOutput": ".requests",
    "preprocess_requests": ".requests",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Attention", "AudioOutput", "AudioRequest", "Batch", "BatchPolicy", "Bucket", "BucketGrid", "BucketSet", "BucketStats",
    "CostError", "CostModel", "Demand", "EncoderRuntime", "EncoderService", "GridError", "Modality", "ModalityGrid",
    "ModalityStats", "Pack", "RuntimeConfig", "ServiceBusy", "ServiceClosed", "SimReport", "TraceError", "TraceRecord", "TraceRecorder",
    "TuneResult", "VisionOutput", "VisionRequest", "audio_demand", "estimate_activation_bytes",
    "estimate_flops", "group_arrivals", "pack", "preprocess_requests", "read_trace", "simulate", "vision_demand", "write_trace",
]
