"""Per-row finiteness flags of an encoder run's outputs, in one pass.

The runtime checks every run's outputs: row ``r`` is good when every value of row ``r`` of every
output tensor is finite (no NaN, no +-inf; finite values however large are good). The reference,

    ok = torch.isfinite(outputs[0]).all(-1)
    for o in outputs[1:]:
        ok &= torch.isfinite(o).all(-1)

is two to three kernels per output (an elementwise ``isfinite``, a bool reduction, the ``&=``): for
the vision encoder's four ``[rows, 2048]`` outputs about a dozen small launches inside every
captured graph, where one pass over the bytes would do.

Inputs (``row_flags`` and both implementations take the same):
    a sequence of ``[rows, cols_i]`` tensors (the outputs as the encoder returns them), or
    one ``[n, rows, cols]`` tensor (the outputs stacked, as the runtime's graphs keep them), or
    one ``[rows, cols]`` tensor.
All of one row count and one device; strides are free (views are read in place, no copy).

Implementations: ``row_flags_torch`` (the reference, any dtype and device) and ``row_flags_triton``
(one launch for up to ``MAX_SOURCES`` tensors, or a stacked tensor of any ``n``; float16, bfloat16
and float32; CUDA, or CPU under ``TRITON_INTERPRET=1``). Both return a fresh ``[rows]`` bool tensor on
the inputs' device. The kernel allocates its output and never reads a value back to the host, so it
can be captured in a CUDA graph; its launch shape depends only on the inputs' shapes (its loops'
trip counts are compile-time, from the number of stacked tensors and the width: a new width
compiles a new variant, on a first call that must come before capture, as for every Triton op).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._triton import triton_available, use_triton

try:
    import triton
    import triton.language as tl
except ImportError:  # the Triton kernel is optional; the reference needs nothing
    triton = tl = None

DTYPES = (torch.float16, torch.bfloat16, torch.float32)  # what the kernel reads
MAX_SOURCES = 4  # tensors one launch reads (more: further launches AND into the same flags)
TILE = 8192  # elements a program loads per step, over all its tensors


def _sources(tensors) -> list[torch.Tensor]:
    """The inputs as a list of tensors of one row count (dim -2) and device: a lone 2-D or 3-D
    tensor, or the 2-D tensors of a non-empty sequence."""
    if isinstance(tensors, torch.Tensor):
        if tensors.dim() not in (2, 3):
            raise ValueError(f"row_flags: expected [rows, cols] or [n, rows, cols], got {tuple(tensors.shape)}")
        return [tensors]
    if not isinstance(tensors, Sequence) or not tensors:
        raise ValueError("row_flags: expected a tensor or a non-empty sequence of tensors")
    srcs = list(tensors)
    if not all(isinstance(t, torch.Tensor) and t.dim() == 2 for t in srcs):
        raise ValueError("row_flags: a sequence of inputs must hold [rows, cols] tensors")
    rows, device = srcs[0].shape[0], srcs[0].device
    for t in srcs[1:]:
        if t.shape[0] != rows or t.device != device:
            raise ValueError(f"row_flags: inputs of {rows} rows on {device}, got {tuple(t.shape)} on {t.device}")
    return srcs


def _finite_rows(t: torch.Tensor) -> torch.Tensor:
    ok = torch.isfinite(t).all(-1)
    return ok if t.dim() == 2 else ok.all(0)


def row_flags_torch(tensors) -> torch.Tensor:
    """The reference: ``[rows]`` bool, True where the row is finite in every input (for a sequence
    of 2-D tensors exactly ``isfinite(t0).all(-1) & isfinite(t1).all(-1) & ...``)."""
    return _reference(_sources(tensors))


def _reference(srcs: list[torch.Tensor]) -> torch.Tensor:
    ok = _finite_rows(srcs[0])
    for t in srcs[1:]:
        ok &= _finite_rows(t)
    return ok


if triton is not None:  # module level: a jit function finds the functions it calls among its globals

    @triton.jit
    def _source_ok(ptr, row_off, row_mask, n, cols, s_n, s_c, N_STEPS: tl.constexpr, C_STEPS: tl.constexpr,
                   BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
        """[BLOCK_R] int32 of one ``[n, rows, cols]`` tensor: 1 where all of the row's values are
        finite. ``row_off`` [1, BLOCK_R, 1]: the rows' int64 offsets. ``N_STEPS * BLOCK_N >= n`` and
        ``C_STEPS * BLOCK_C >= cols`` (trip counts are compile-time: the shapes they depend on are
        fixed per model); masked-out lanes read 0, which is finite."""
        ok = tl.full([BLOCK_N, BLOCK_R, BLOCK_C], 1, tl.int1)
        ni = tl.arange(0, BLOCK_N)[:, None, None]
        ci = tl.arange(0, BLOCK_C)[None, None, :]
        for si in range(N_STEPS):
            i = si * BLOCK_N + ni
            base = ptr + (i.to(tl.int64) * s_n + row_off)  # [BLOCK_N, BLOCK_R, 1]
            mask_ir = (i < n) & row_mask
            for sc in range(C_STEPS):
                c = sc * BLOCK_C + ci
                x = tl.load(base + c * s_c, mask=mask_ir & (c < cols), other=0.0)
                # exact for float16/bfloat16/float32: NaN and +-inf fail the comparison, every finite value passes
                ok = ok & (tl.abs(x.to(tl.float32)) < float("inf"))
        return tl.min(tl.min(ok.to(tl.int32), axis=2), axis=0)

    @triton.jit
    def _row_flags_kernel(out_ptr, rows,
                          p0, n0, cols0, sn0, sr0, sc0,
                          p1, n1, cols1, sn1, sr1, sc1,
                          p2, n2, cols2, sn2, sr2, sc2,
                          p3, n3, cols3, sn3, sr3, sc3,
                          NUM_SRC: tl.constexpr, ACC: tl.constexpr, N_STEPS: tl.constexpr, C_STEPS: tl.constexpr,
                          BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
        # a program: BLOCK_R rows of every source, each read in [BLOCK_N, BLOCK_R, BLOCK_C] tiles
        r = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
        in_rows = r < rows
        row_mask = in_rows[None, :, None]
        r64 = r[None, :, None]
        ok = _source_ok(p0, r64 * sr0, row_mask, n0, cols0, sn0, sc0,
                        N_STEPS, C_STEPS, BLOCK_N, BLOCK_R, BLOCK_C)
        if NUM_SRC > 1:
            ok = ok & _source_ok(p1, r64 * sr1, row_mask, n1, cols1, sn1, sc1,
                                 N_STEPS, C_STEPS, BLOCK_N, BLOCK_R, BLOCK_C)
        if NUM_SRC > 2:
            ok = ok & _source_ok(p2, r64 * sr2, row_mask, n2, cols2, sn2, sc2,
                                 N_STEPS, C_STEPS, BLOCK_N, BLOCK_R, BLOCK_C)
        if NUM_SRC > 3:
            ok = ok & _source_ok(p3, r64 * sr3, row_mask, n3, cols3, sn3, sc3,
                                 N_STEPS, C_STEPS, BLOCK_N, BLOCK_R, BLOCK_C)
        if ACC:  # a later group of sources: AND into the flags an earlier launch wrote
            ok = ok & tl.load(out_ptr + r, mask=in_rows, other=0).to(tl.int32)
        tl.store(out_ptr + r, ok.to(tl.uint8), mask=in_rows)


def _launch_config(rows: int, group: list[torch.Tensor]) -> tuple[int, int, int, int]:
    """(BLOCK_N, BLOCK_R, BLOCK_C, num_warps) for one launch over ``group`` (3-D views): a row of
    up to 2048 columns per step, as many stacked tensors of a row as fit, then as many rows, so
    that a step loads about ``TILE`` elements over all the group's tensors."""
    k = len(group)
    block_c = min(2048, triton.next_power_of_2(max(t.shape[2] for t in group)))
    block_n = min(triton.next_power_of_2(max(t.shape[0] for t in group)), max(1, TILE // (k * block_c)))
    block_r = min(64, triton.next_power_of_2(rows), max(1, TILE // (k * block_n * block_c)))
    return block_n, block_r, block_c, 8 if k * block_n * block_r * block_c >= 4096 else 4


def row_flags_triton(tensors) -> torch.Tensor:
    """Same contract as ``row_flags_torch``, one kernel launch (per ``MAX_SOURCES`` tensors of a
    sequence). Inputs float16, bfloat16 or float32 (mixed is fine), any strides; a row's largest
    column offset (``(cols - 1) * stride``) must fit in int32."""
    return _launch(_sources(tensors))


def _launch(srcs: list[torch.Tensor]) -> torch.Tensor:
    views = []
    for t in srcs:
        if t.dtype not in DTYPES:
            raise ValueError(f"row_flags_triton reads {DTYPES}, got {t.dtype}")
        v = t if t.dim() == 3 else t.unsqueeze(0)
        if (v.shape[2] - 1) * v.stride(2) >= 2**31:
            raise ValueError("row_flags_triton: a row's column offsets must fit in int32")
        if v.numel():  # empty tensors hold no non-finite value
            views.append(v)
    if not triton_available():
        raise ValueError("row_flags_triton needs triton")
    rows = srcs[0].shape[-2]
    out = torch.empty(rows, dtype=torch.uint8, device=srcs[0].device)
    if not views:
        return out.fill_(1).view(torch.bool)
    for start in range(0, len(views), MAX_SOURCES):
        group = views[start : start + MAX_SOURCES]
        block_n, block_r, block_c, warps = _launch_config(rows, group)
        args = []
        for v in group + [group[0]] * (MAX_SOURCES - len(group)):  # unused slots: never read
            args += [v, v.shape[0], v.shape[2], v.stride(0), v.stride(1), v.stride(2)]
        _row_flags_kernel[(triton.cdiv(rows, block_r),)](
            out, rows, *args, NUM_SRC=len(group), ACC=start > 0,
            N_STEPS=triton.cdiv(max(v.shape[0] for v in group), block_n),
            C_STEPS=triton.cdiv(max(v.shape[2] for v in group), block_c),
            BLOCK_N=block_n, BLOCK_R=block_r, BLOCK_C=block_c, num_warps=warps,
        )
    return out.view(torch.bool)


def row_flags(tensors, impl: str = "auto") -> torch.Tensor:
    """``[rows]`` bool: True where every value of the row is finite in every input (see the module
    docstring for the inputs).

    Args:
        tensors: ``[rows, cols_i]`` tensors, or one ``[n, rows, cols]`` (stacked) or ``[rows, cols]``.
        impl: ``auto`` (the Triton kernel on CUDA when Triton imports and every input's dtype is one
            it reads, else the reference), ``triton`` or ``torch``.
    """
    srcs = _sources(tensors)
    if use_triton(impl, srcs[0], "row_flags") and (impl == "triton" or all(t.dtype in DTYPES for t in srcs)):
        return _launch(srcs)
    return _reference(srcs)


__all__ = ["DTYPES", "MAX_SOURCES", "row_flags", "row_flags_torch", "row_flags_triton"]
