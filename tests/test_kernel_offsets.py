"""Our Triton kernels index tensors of more than 2**31 elements safely.

A long video reaches the kernels with over a million tokens: the fused q/k/v projection then holds
more than 2**31 elements, and an offset computed in int32 (Triton's type for program ids and for
integer arguments that fit in it) wraps around and reads or writes outside the tensor, which kills
the CUDA context for every later call. The rule that makes that impossible: every program id is
widened to int64 before any arithmetic, so each offset derived from it is 64-bit. These tests hold
every kernel of the package to that rule by reading its source (no Triton needed), and check the
size guard that the one remaining int32 product has.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import omnienc
from omnienc.encoders.ops._triton import triton_available
from omnienc.encoders.ops.finite import row_flags_triton

ROOT = Path(omnienc.__file__).parent
FOLDERS = ("encoders", "preprocess", "runtime")


def _is_triton_jit(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return isinstance(target, ast.Attribute) and target.attr == "jit" and getattr(target.value, "id", "") == "triton"


def _kernels():
    """(file, function) of every ``@triton.jit`` function in the package's library folders."""
    found = []
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.FunctionDef) and any(_is_triton_jit(d) for d in node.decorator_list):
                    found.append((path, node))
    return found


def _program_id_uses(fn: ast.FunctionDef):
    """Each ``tl.program_id(...)`` call in ``fn`` with whether it is widened at once:
    ``tl.program_id(k).to(tl.int64)``."""
    parents = {child: parent for parent in ast.walk(fn) for child in ast.iter_child_nodes(parent)}
    for node in ast.walk(fn):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "program_id":
            attr = parents.get(node)
            call = parents.get(attr)
            widened = (isinstance(attr, ast.Attribute) and attr.attr == "to" and isinstance(call, ast.Call)
                       and len(call.args) == 1 and ast.unparse(call.args[0]) == "tl.int64")
            yield node.lineno, widened


def test_every_kernel_is_found():
    names = {fn.name for _, fn in _kernels()}
    # the kernels of the vision rotary, the fused block ops, the finiteness flags and the audio front-end
    assert {"rotary_kernel", "add_layernorm_kernel", "bias_gelu_kernel", "_row_flags_kernel",
            "epilogue_kernel"} <= names


@pytest.mark.parametrize("path,fn", _kernels(), ids=lambda x: getattr(x, "name", None) or Path(x).name)
def test_program_ids_are_widened_to_int64(path, fn):
    uses = list(_program_id_uses(fn))
    narrow = [line for line, widened in uses if not widened]
    assert not narrow, f"{path.name}:{fn.name}: tl.program_id used in int32 at line(s) {narrow}; widen it at once " \
                       "(tl.program_id(k).to(tl.int64)) so offsets past 2**31 elements stay correct"


def test_rule_catches_a_narrow_program_id():
    src = ("@triton.jit\ndef k(x_ptr, stride):\n    t = tl.program_id(0)\n    tl.load(x_ptr + t * stride)\n"
           "    u = tl.program_id(1).to(tl.int64)\n")
    fn = ast.parse(src).body[0]
    assert [w for _, w in _program_id_uses(fn)] == [False, True]


def test_row_flags_refuses_column_offsets_past_int32_before_launch():
    # a row whose last column lies 2**31 elements past its first: refused with a clear error, on
    # meta tensors (no memory, no Triton needed to reach the guard)
    wide = torch.empty(1, device="meta", dtype=torch.bfloat16).as_strided((4, 3), (1, 2**30 + 1))
    with pytest.raises(ValueError, match="int32"):
        row_flags_triton([wide])
    if not triton_available():  # a row that fits passes the guard and meets the next check
        fine = torch.empty(1, device="meta", dtype=torch.bfloat16).as_strided((4, 3), (1, 2**29))
        with pytest.raises(ValueError, match="needs triton"):
            row_flags_triton([fine])
