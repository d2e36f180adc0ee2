"""Preprocessing of raw media into the encoders' inputs, in torch, on any device.

Images, video frames and waveforms become ``pixel_values``/``grid_thw`` and
``input_features``/``feature_lens`` equal (within a bicubic filter's last bit) to what
transformers' processors make for Qwen3-Omni, with the same code on the CPU and the GPU, batched,
and with no host sync beyond what the sizes need (they come from image dimensions and sample
counts). ``omnienc.runtime``'s ``VisionRequest.from_images`` / ``from_video`` and
``AudioRequest.from_waveforms`` are built on ``preprocess_images``, ``preprocess_video`` and
``preprocess_waveforms``; ``preprocess_requests`` (many requests in one pass) on ``preprocess_many``.

Modules: ``config`` (``PreprocessConfig``), ``image`` (images and videos), ``audio`` (resampling and
log-mel), ``batch`` (many requests at once), ``staging`` (host inputs to the device),
``decode`` (files: Pillow, PyAV, soundfile), ``files`` (``Preprocessor``: files to inputs,
with the torch backend or transformers' processors as the CPU reference).
"""

from importlib import import_module

# Name -> submodule; each loads on first use, so ``omnienc.preprocess.config`` (limits and settings,
# no torch) serves the command line's help without importing torch.
_LAZY = {
    **dict.fromkeys(("RawAudio", "RawImages", "RawVideo", "preprocess_many"), ".batch"),
    **dict.fromkeys(("AudioInputs", "MelLayout", "log_mel_frames", "log_mel", "mel_filter_bank",
                     "preprocess_waveforms", "resample", "resampled_length"), ".audio"),
    **dict.fromkeys(("InputError", "PreprocessConfig", "PreprocessConfigError"), ".config"),
    **dict.fromkeys(("load_image", "read_audio", "read_video_frames"), ".decode"),
    **dict.fromkeys(("Stager", "to_device"), ".staging"),
    **dict.fromkeys(("BACKENDS", "AudioInput", "Preprocessor", "VisualInput", "image_processor_class",
                     "make_feature_extractor", "make_image_processor", "patchify_frames", "transformers_video",
                     "whisper_features"), ".files"),
    **dict.fromkeys(("VisionInputs", "pil_to_rgb", "preprocess_images", "preprocess_video", "resize_bicubic",
                     "sample_video_indices", "smart_resize"), ".image"),
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AudioInput",
    "AudioInputs",
    "MelLayout",
    "RawAudio",
    "RawImages",
    "RawVideo",
    "Stager",
    "BACKENDS",
    "InputError",
    "PreprocessConfig",
    "PreprocessConfigError",
    "Preprocessor",
    "VisionInputs",
    "VisualInput",
    "image_processor_class",
    "load_image",
    "log_mel",
    "log_mel_frames",
    "make_feature_extractor",
    "make_image_processor",
    "mel_filter_bank",
    "patchify_frames",
    "pil_to_rgb",
    "preprocess_images",
    "preprocess_many",
    "preprocess_video",
    "preprocess_waveforms",
    "read_audio",
    "read_video_frames",
    "resample",
    "resampled_length",
    "resize_bicubic",
    "sample_video_indices",
    "smart_resize",
    "to_device",
    "transformers_video",
    "whisper_features",
]
