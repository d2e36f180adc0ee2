"""The bucketed CUDA-graph runtime: grid, packing, capture/replay, eager fallback, service.

The pure planning modules (grid, packing, trace, simulate) import without torch; the runtime,
service and request types load on first use, so ``omnienc replay`` / ``tune`` start instantly.
"""

from importlib import import_module

from .grid import Bucket, BucketGrid, GridError, ModalityGrid, estimate_activation_bytes
from .packing import BucketSet, Demand, Replay, audio_demand, pack, vision_demand
from .simulate import SimReport, simulate
from .trace import TraceError, TraceRecord, TraceRecorder, read_trace, write_trace

_LAZY = {
    "EncoderRuntime": ".runtime",
    "EncoderService": ".service",
    "ServiceClosed": ".service",
    "ServiceBusy": ".service",
    "Batch": ".runtime",
    "VisionRequest": ".requests",
    "AudioRequest": ".requests",
    "VisionOutput": ".requests",
    "AudioOutput": ".requests",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AudioOutput", "AudioRequest", "Bucket", "BucketGrid", "BucketSet", "Demand", "EncoderRuntime",
    "EncoderService", "GridError", "ServiceBusy", "Batch", "ModalityGrid", "Replay", "ServiceClosed", "SimReport", "TraceError",
    "TraceRecord", "TraceRecorder", "VisionOutput", "VisionRequest", "audio_demand",
    "estimate_activation_bytes", "pack", "read_trace", "simulate", "vision_demand", "write_trace",
]
