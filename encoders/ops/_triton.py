"""What the ops share about Triton: whether it imports, whether it runs in its CPU interpreter, and
how an op chooses between its Triton kernel and its PyTorch reference.

A kernel runs on CUDA tensors, or on CPU tensors under Triton's interpreter: ``TRITON_INTERPRET=1``
set before triton is first imported (its own library functions are decorated then), which is how
the CPU tests run the kernels (``tests/conftest.py`` sets it on machines without CUDA).
"""

from __future__ import annotations

import functools
import os

import torch

IMPLS = ("auto", "torch", "triton")


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except ImportError:
        return False
    return True


def interpreting() -> bool:
    """Whether Triton runs in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def use_triton(impl: str, x: torch.Tensor, op: str) -> bool:
    """Whether op ``op`` on tensors like ``x`` runs its Triton kernel: ``triton`` (required),
    ``auto`` (on CUDA when Triton imports) or ``torch`` (never)."""
    if impl not in IMPLS:
        raise ValueError(f"{op}: unknown impl {impl!r}; choose one of {IMPLS}")
    if impl == "torch":
        return False
    runnable = triton_available() and (x.is_cuda or (x.device.type == "cpu" and interpreting()))
    if impl == "triton" and not runnable:
        raise ValueError(f"{op}: impl 'triton' needs an importable triton and CUDA tensors "
                         "(or CPU tensors with TRITON_INTERPRET=1)")
    return runnable and (impl == "triton" or x.is_cuda)
