"""The bucketed CUDA-graph runtime: grid, packing, capture/replay, eager fallback, service."""

from .grid import Bucket, BucketGrid, GridError, ModalityGrid
from .packing import Demand, Replay, audio_demand, pack, vision_demand
from .requests import AudioOutput, AudioRequest, VisionOutput, VisionRequest
from .runtime import EncoderRuntime
from .service import EncoderService, ServiceClosed
from .trace import TraceRecord, TraceRecorder, read_trace, write_trace

__all__ = [
    "AudioOutput",
    "AudioRequest",
    "Bucket",
    "BucketGrid",
    "Demand",
    "EncoderRuntime",
    "EncoderService",
    "ServiceClosed",
    "GridError",
    "ModalityGrid",
    "Replay",
    "TraceRecord",
    "TraceRecorder",
    "VisionOutput",
    "VisionRequest",
    "audio_demand",
    "pack",
    "read_trace",
    "vision_demand",
    "write_trace",
]
