"""The bucketed CUDA-graph runtime: grid, packing, capture/replay, eager fallback, service.

The pure planning modules (config, grid, packing, batching, costs, trace, simulator, tune) import
without torch; every name of this package loads its module on first use (calibration:
``runtime.calibrate``), so ``omnienc simulate`` and ``tune`` start instantly.
"""

from importlib import import_module

# Every name loads its module on first use: a tool that needs one module (the simulator's batching
# rule, the grid) does not pay for numpy, yaml or torch through this package.
_LAZY = {
    **dict.fromkeys(("BatchPolicy", "group_arrivals"), ".batching"),
    **dict.fromkeys(("Attention", "RuntimeConfig"), ".config"),
    **dict.fromkeys(("CostError", "CostModel", "estimate_activation_bytes", "estimate_flops"), ".costs"),
    **dict.fromkeys(("Bucket", "BucketGrid", "GridError", "ModalityGrid"), ".grid"),
    **dict.fromkeys(("BucketSet", "Demand", "Pack", "audio_demand", "pack", "vision_demand"), ".packing"),
    **dict.fromkeys(("SimReport", "simulate"), ".simulator"),
    **dict.fromkeys(("BucketStats", "ModalityStats"), ".stats"),
    **dict.fromkeys(("TraceError", "TraceRecord", "TraceRecorder", "read_trace", "write_trace"), ".trace"),
    "TuneResult": ".tune",
    **dict.fromkeys(("EncoderRuntime", "Batch"), ".runtime"),
    **dict.fromkeys(("EncoderService", "ServiceClosed", "ServiceBusy"), ".service"),
    "Modality": ".modality",
    **dict.fromkeys(("VisionRequest", "AudioRequest", "VisionOutput", "AudioOutput", "preprocess_requests"), ".requests"),
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
