"""Native Qwen3-Omni encoders: HF checkpoint loading, host-side plans, capturable device forwards."""

from .attention import BACKENDS, varlen_attention
from .audio import AudioEncoder, AudioPlan, audio_output_length, chunk_features, plan_audio
from .vision import VisionEncoder, VisionPlan, plan_vision
from .weights import CheckpointError, WeightLoadError, load_hf_weights, read_thinker_subconfig

__all__ = [
    "AudioEncoder",
    "AudioPlan",
    "BACKENDS",
    "CheckpointError",
    "VisionEncoder",
    "VisionPlan",
    "WeightLoadError",
    "audio_output_length",
    "chunk_features",
    "load_hf_weights",
    "plan_audio",
    "plan_vision",
    "read_thinker_subconfig",
    "varlen_attention",
]
