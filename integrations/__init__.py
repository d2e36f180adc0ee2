"""omnienc's encoders inside other software: the floor above ``runtime/``.

- ``hf_thinker``: drops the native encoders into a transformers Qwen3-Omni Thinker (``swap_thinker_encoders``).
- ``mstar``: encoder nodes and a Qwen3-Omni model class for the M* engine (the ``mstar`` extra);
  imported on demand, never from here, so this package loads without M*.
"""
