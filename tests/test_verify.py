"""``verify()``: well-formed loop IR passes; each kind of malformed IR, built by hand, is rejected
with an ``InternalError`` that names the offending node."""
from __future__ import annotations

import pytest
import torch

import sgnn
from sgnn.engine import abi
from sgnn.engine.loopir import (Array, Assign, Bin, Decl, For, Function, Let, Level, Lit, Load, Locate, Parallel,
                                PosFor, Size, TileAcc, TileAxpy, TileSpill, Var, Walker, Workspace, AddrOf)
from sgnn.engine.lower import lower
from sgnn.engine.runtime import Plan, operand_info
from sgnn.engine.tiling import decide
from sgnn.engine.verify import verify
from sgnn.errors import InternalError

from engine_cases import dense_rand, make_sparse, random_coo

A_POS, A_CRD, A_VAL = Array("a_A", "pos", 1), Array("a_A", "crd", 1), Array("a_A", "val")
X, OUT = Array("a_X", "dense"), Array("out", "dense")
ZERO, ONE = Lit(0, "int"), Lit(1, "int")
PARAMS = (abi.Param("N_i", "size"), abi.Param("N_j", "size"),
          abi.Param("a_A_pos1", "array", A_POS, "index32"), abi.Param("a_A_crd1", "array", A_CRD, "index32"),
          abi.Param("a_A_val", "array", A_VAL, "value"), abi.Param("a_X", "array", X, "value"),
          abi.Param("out", "array", OUT, "value", writable=True),
          abi.Param("bounds", "array", Array("bounds", "bounds"), "int64"), abi.Param("nparts", "count"),
          abi.Param("nthreads", "threads"))


def row_sum(body) -> tuple:
    """parallel: for part: for v_i in bounds: p0_0 = locate(v_i); <body>"""
    part = Var("part")
    rows = For("v_i", Load(Array("bounds", "bounds"), part),
               Load(Array("bounds", "bounds"), Bin("+", part, ONE, "int")),
               (Let("int", "p0_0", Locate("a_A", 0, ZERO, Size("i"), Var("v_i"))), *body))
    return (Parallel((For("part", ZERO, Var("nparts"), (rows,), kind="parts"),)),)


def good_body() -> tuple:
    """out[v_i] = sum over the row's positions of A_val * X[v_j]"""
    acc = Load(Array("ws0", "workspace"), ZERO)
    inner = PosFor("p0_1", Level("a_A", 1, Var("p0_0")), "v_j",
                   (Assign(acc, "+=", Bin("*", Load(A_VAL, Var("p0_1")), Load(X, Var("v_j")))),))
    return (Workspace("ws0", ONE), Assign(acc, "=", Lit(0)), inner, Assign(Load(OUT, Var("v_i")), "=", acc))


def check(body, match: str):
    with pytest.raises(InternalError, match=match):
        verify([Function("compute", list(PARAMS), row_sum(body))], PARAMS)


def test_well_formed_ir_passes():
    verify([Function("compute", list(PARAMS), row_sum(good_body()))], PARAMS)


def test_use_before_definition():
    check((Let("T", "h0", Var("h1")), Let("T", "h1", Lit(1))), r"'h1' is used outside its scope.*h0 = h1")


def test_out_of_scope_variable():
    loop = PosFor("p0_1", Level("a_A", 1, Var("p0_0")), "v_j", ())
    check((loop, Assign(Load(OUT, Var("v_i")), "=", Load(X, Var("v_j")))), r"'v_j' is used outside its scope")


def test_redefinition_in_one_block():
    check((Let("T", "h0", Lit(1)), Let("T", "h0", Lit(2))), r"'h0' is defined twice")


def test_position_not_derived_from_parent_level():
    wrong = PosFor("p0_1", Level("a_A", 1, Var("v_i")), "v_j", ())
    check((wrong,), r"level 1 of a_A is entered from .*v_i.*not a level-0 position")


def test_position_of_another_operand():
    other = Let("int", "p1_0", Locate("a_B", 0, ZERO, Size("i"), Var("v_i")))
    check((other, PosFor("p0_1", Level("a_A", 1, Var("p1_0")), "v_j", ())), r"not a level-0 position of a_A")


def test_level_zero_must_start_at_zero():
    check((Let("int", "p", Locate("a_A", 0, Var("v_i"), Size("i"), Var("v_i"))),), r"level 0 of a_A entered from")


def test_array_not_a_parameter():
    check((Assign(Load(OUT, Var("v_i")), "=", Load(Array("a_Y", "dense"), Var("v_i"))),),
          r"array 'a_Y' is not a kernel parameter")


def test_undeclared_workspace():
    check((Assign(Load(Array("ws9", "workspace"), ZERO), "=", Lit(0)),), r"workspace 'ws9' is not declared")


def test_write_to_read_only_operand():
    check((Assign(Load(X, Var("v_i")), "=", Lit(0)),), r"write to the read-only operand array 'a_X'")


def test_assignment_to_immutable_scalar():
    check((Let("T", "h0", Lit(1)), Assign(Var("h0"), "+=", Lit(1))), r"assignment to 'h0'.*not a mutable")


def test_parallel_loop_not_outermost():
    inner = For("part2", ZERO, Var("nparts"), (), kind="parts")
    check((inner,), r"parallel loop part2 is not the outermost")


def test_nested_parallel_region():
    check((Parallel(()),), r"parallel region must be outermost")


def test_register_tile_undeclared():
    src = AddrOf(Load(X, Var("v_i")))
    check((TileAxpy("ws0_r", Lit(1), src),), r"register tile 'ws0_r' is not declared")
    check((TileAcc("ws0_r"), TileSpill("ws0_r", "ws1")), r"undeclared workspace 'ws1'")


def test_walker_without_declared_position():
    w = Walker("p0_1", "p0_1_end", "in_p0_1", Level("a_A", 1, Var("p0_0")))
    check((For("v_j", ZERO, Size("j"), (), walkers=(w,)),), r"iterator 'p0_1'.*not declared")


def test_unknown_size():
    check((Decl("int", "n", Size("k")),), r"size of 'k' is not a kernel parameter")


def test_every_kernel_kind_verifies():
    """Lowered kernels of several shapes (sampled, assembled, serial, tiled) pass ``verify``."""
    i, j, k = sgnn.indices("i j k")
    A, B, Y = sgnn.tensors("A B Y")
    S = make_sparse(random_coo(1, 12, 9, "empty_rows"), "csr", torch.float32, torch.int32).operand
    cases = [(sgnn.compute((i, k), sgnn.sum_(j, A[i, j] * Y[j, k])), dict(A=S, Y=dense_rand(0, 9, 40, dtype=torch.float32))),
             (sgnn.compute((i, j), A[i, j] + B[i, j]), dict(A=S, B=S)),
             (sgnn.compute((), sgnn.sum_((i, j), A[i, j])), dict(A=S))]
    for stmt, ops in cases:
        plan = Plan(stmt, {n: operand_info(t) for n, t in ops.items()})
        tile, _ = decide(plan.sched, plan.sizes(ops))
        verify(lower(plan.sched, tile, plan.params), plan.params)
