"""The runtime's view of the ABI: one parameter list gives the C prototype's order, the ctypes
argument types and the order in which the runtime passes sizes and operand arrays."""
from __future__ import annotations

import ctypes

import torch

import sgnn
from sgnn.engine import abi
from sgnn.engine.runtime import Plan, as_operand, operand_info

from engine_cases import dense_rand, make_sparse, random_coo

f32, i32 = torch.float32, torch.int32
i, j, k = sgnn.indices("i j k")
A, B, X = sgnn.tensors("A B X")


def plan_of(stmt, **ops):
    ops = {n: as_operand(t, n) for n, t in ops.items()}
    return Plan(stmt, {n: operand_info(t) for n, t in ops.items()}), ops


def test_parameters_in_abi_order():
    S = make_sparse(random_coo(1, 12, 9, "uniform"), "csr", f32, i32).operand
    plan, ops = plan_of(sgnn.compute((i, k), sgnn.sum_(j, A[i, j] * X[j, k])), A=S,
                        X=dense_rand(0, 9, 4, dtype=f32))
    names = [p.name for p in plan.params]
    assert names == ["N_i", "N_k", "N_j", "a_A_pos1", "a_A_crd1", "a_A_val", "a_X", "out", "bounds", "nparts",
                     "nthreads"]
    assert plan.vars == ["i", "k", "j"]
    assert abi.argtypes(plan.params) == [ctypes.c_int64] * 3 + [ctypes.c_void_p] * 6 + [ctypes.c_int64, ctypes.c_int32]
    assert [key for key, _ in plan.array_args] == ["a_A", "a_X"]
    assert plan.array_args[0][1][0] == ("ptrs", ("pos", 1), ("crd", 1), ("val", None))
    assert [p.writable for p in plan.params].count(True) == 1


def test_pattern_only_and_assembled_parameters():
    S = make_sparse(random_coo(2, 6, 5, "uniform"), "csr", f32, i32).operand
    plan, _ = plan_of(sgnn.compute((i, j), A[i, j] + B[i, j]), A=S, B=S.with_values(None))
    names = [p.name for p in plan.params]
    assert "a_B_val" not in names and names[-6:-3] == ["out_pos", "out_crd", "out_val"]
    assert {p.elem for p in plan.params if p.name in ("out_pos", "out_crd")} == {"int64"}


def test_kernel_call_uses_the_same_list():
    S = make_sparse(random_coo(3, 12, 9, "uniform"), "csr", f32, i32)
    x = dense_rand(0, 9, 4, dtype=f32)
    plan, ops = plan_of(sgnn.compute((i, k), sgnn.sum_(j, A[i, j] * X[j, k])), A=S.operand, X=x)
    out = plan(ops)
    assert torch.allclose(out.double(), S.dense @ x.double(), atol=1e-5)
    (kernel,) = plan.kernels.values()
    assert kernel.params is plan.params
    assert list(kernel.fns["compute"].argtypes) == abi.argtypes(plan.params)


def test_out_receives_the_dense_result():
    """``evaluate(out=)`` writes the same result into the given tensor (row blocks share one buffer);
    a wrong shape, dtype, layout, an alias of an operand or a sparse result is refused by name."""
    from sgnn.engine.runtime import evaluate, result_spec
    from sgnn.errors import UserError
    import pytest
    S = make_sparse(random_coo(4, 12, 9, "powerlaw"), "csr", f32, i32).operand
    x = dense_rand(1, 9, 5, dtype=f32)
    spmm = sgnn.compute((i, k), sgnn.sum_(j, A[i, j] * X[j, k]))
    fresh = evaluate(spmm, {"A": S, "X": x})
    assert result_spec(spmm, {"A": S, "X": x}) == ((12, 5), f32)
    buf = torch.full((12, 5), float("nan"))
    assert evaluate(spmm, {"A": S, "X": x}, out=buf) is buf and torch.equal(buf, fresh)
    store = torch.randn(100)
    xs = store[:45].view(9, 5)  # an out overlapping an operand's memory
    for bad, what, xx in [(torch.empty(12, 4), "shape", x), (torch.empty(12, 5, dtype=torch.float64), "dtype", x),
                          (torch.empty(5, 12).t(), "contiguous", x), (store[30:90].view(12, 5), "memory", xs)]:
        with pytest.raises(UserError, match=what):
            evaluate(spmm, {"A": S, "X": xx}, out=bad)
    with pytest.raises(UserError, match="dense result"):
        evaluate(sgnn.compute((i, j), A[i, j] + B[i, j]), {"A": S, "B": S}, out=torch.empty(12, 9))
