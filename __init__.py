"""omnienc: native Qwen3-Omni vision and audio encoders with a bucketed CUDA-graph runtime."""

__version__ = "0.1.0"
