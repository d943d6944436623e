"""Codegen: the golden C++ corpus, and the rendering of loop-IR nodes.

Golden sources of representative kernels live in ``tests/golden``: the generated C++ (comments
stripped) must equal them byte for byte. Refresh them on purpose with ``SGNN_UPDATE_GOLDEN=1``.
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest
import torch

import sgnn
from sgnn.engine import runtime, tiling
from sgnn.engine.abi import Param
from sgnn.engine.codegen import Renderer, render
from sgnn.engine.loopir import (Array, Assign, Bin, Call, Cmp, Flat, For, Function, Lit, Load, Locate, Logic,
                                Parallel, Select, Size, TileWidth, Var)
from engine_cases import dense_rand, make_sparse, random_coo

GOLDEN = Path(__file__).parent / "golden"
f32, i32 = torch.float32, torch.int32

i, j, h, c = sgnn.indices("i j h c")
A, B, X, AD, AS = sgnn.tensors("A B X ad as_")
ATTENTION = sgnn.compute((i, h, c), sgnn.sum_(j, sgnn.softmax(
    j, sgnn.leaky_relu(AD[i, h] + AS[j, h], 0.2), over=A[i, j]) * X[j, h, c]))


@pytest.fixture(scope="module")
def S():
    """A 30 × 20 CSR matrix (float32 values, int32 indices) with empty rows."""
    return make_sparse(random_coo(1, 30, 20, "empty_rows"), "csr", f32, i32).operand


def attention_operands(S, heads=2, width=5):
    m, n = S.shape
    return dict(A=S, ad=dense_rand(1, m, heads, dtype=f32), as_=dense_rand(2, n, heads, dtype=f32),
                X=dense_rand(3, n, heads, width, dtype=f32))


# ---------------------------------------------------------------- rendering


@pytest.mark.parametrize("e,want", [
    (Lit(0), "T(0)"), (Lit(0.2), "T(0.2)"), (Lit(float("-inf")), "-SG_INF"), (Lit(3, "int"), "3"),
    (Bin("+", Var("a"), Var("b")), "(a + b)"), (Bin("*", Var("p"), Size("j"), "int"), "p * N_j"),
    (Bin("max", Var("a"), Var("b")), "sg::max<T>(a, b)"), (Call("exp", (Var("x"),)), "sg::exp<T>(x)"),
    (Call("min", (TileWidth(), Var("n")), "int"), "sg::min<int64_t>(TILE, n)"),
    (Select(Var("f"), Var("x"), Lit(0)), "(f ? x : T(0))"),
    (Logic("or", (Cmp("<", Var("p"), Var("e")), Var("g"))), "((p < e) || g)"),
    (Load(Array("a_A", "pos", 1), Bin("+", Var("p"), Lit(1, "int"), "int")), "a_A_pos1[p + 1]"),
    (Flat(Var("v_i"), ((Var("v_j"), Size("j")),)), "(v_i) * N_j + v_j"),
    (Locate("a_A", 1, Var("p0"), Size("j"), Var("v_j")), "p0 * N_j + v_j"),
    (Locate("a_A", 0, Lit(0, "int"), Size("i"), Var("v_i")), "v_i"),
])
def test_expression_rendering(e, want):
    assert Renderer("T").x(e) == want


def test_prototype_from_abi_params():
    ps = [Param("N_i", "size"), Param("a_A_pos1", "array", Array("a_A", "pos", 1), "index32"),
          Param("a_X", "array", Array("a_X", "dense"), "value"),
          Param("out", "array", Array("out", "dense"), "value", writable=True), Param("nthreads", "threads")]
    assert Renderer("S").prototype(ps, None) == ("int64_t N_i, const int32_t* a_A_pos1, const S* a_X, "
                                                 "S* SG_RESTRICT out, int32_t nthreads")
    assert Renderer("T").prototype(ps, "N_i").startswith("int64_t N_i_arg, ")


def test_render_parallel_loop_and_assign():
    body = (Parallel((For("part", Lit(0, "int"), Var("nparts"), (Assign(Load(Array("out", "dense"), Var("part")),
                                                                        "max=", Lit(1)),), kind="parts"),)),)
    src = render([Function("compute", [], body)], name="k", value_dtype="float64", tile=None, header="h")
    assert "typedef double T;" in src and "#pragma omp for schedule(dynamic, 1)" in src
    assert "out[part] = sg::max<T>(out[part], T(1));" in src


# ---------------------------------------------------------------- golden C++


def strip_comments(cpp: str) -> str:
    return "\n".join(ln for ln in cpp.splitlines() if not ln.lstrip().startswith("//")) + "\n"


def canonical_kernels(S) -> dict:
    """The golden corpus: representative statements on a float32 CSR matrix (30 x 20, int32 indices).

    Widths 5 (generic bucket), 64, 128 (exact tiles) and 256 (a tile loop over a wide row), bf16
    storage, SDDMM, GAT attention, max / min aggregation, a union inside a reduction, an assembled
    output, a natively CSC (transposed) access, a 3-index contraction, the GCN layer statement and
    a gather large enough to be prefetched, float64, a sparse-plus-dense sum (a dense loop walking
    a sparse row) and a serial reduction to a scalar."""
    m, n = S.shape
    bf = torch.bfloat16
    Sb = S.with_values(S.values.to(bf))
    csc = S.to("csc")  # 30 x 20 stored column-major: A[j, i] iterates i then j
    wide = make_sparse(random_coo(4, m, 20000, "empty_rows"), "csr", f32, i32).operand
    k = sgnn.indices("k")[0]
    d, r, e, Z, Y, b = sgnn.tensors("d r e Z Y b")  # GCN's kernel: act(r_i sum_j A_ij d_j Z_jk + e_i Y_ik + b_k)
    gcn = sgnn.compute((i, k), r[i] * sgnn.sum_(j, A[i, j] * d[j] * Z[j, k]) + e[i] * Y[i, k] + b[k])
    gcn_ops = dict(A=S.with_values(None), d=dense_rand(5, n, dtype=f32), r=dense_rand(6, m, dtype=f32),
                   e=dense_rand(7, m, dtype=f32), Z=dense_rand(8, n, 16, dtype=f32),
                   Y=dense_rand(9, m, 16, dtype=f32), b=dense_rand(10, 16, dtype=f32))
    spmm = sgnn.compute((i, k), sgnn.sum_(j, A[i, j] * X[j, k]))
    return {
        "spmm": lambda: sgnn.explain("ik,kj->ij", S, dense_rand(0, 20, 5, dtype=f32)).cpp,
        "spmm_w64": lambda: sgnn.explain("ik,kj->ij", S, dense_rand(0, 20, 64, dtype=f32)).cpp,
        "spmm_w128": lambda: sgnn.explain("ik,kj->ij", S, dense_rand(0, 20, 128, dtype=f32)).cpp,
        "spmm_w256": lambda: sgnn.explain("ik,kj->ij", S, dense_rand(0, 20, 256, dtype=f32)).cpp,
        "spmm_bf16": lambda: sgnn.explain("ik,kj->ij", Sb, dense_rand(0, 20, 32, dtype=f32).to(bf)).cpp,
        "spmm_prefetch": lambda: sgnn.explain("ik,kj->ij", wide, dense_rand(0, 20000, 256, dtype=f32)).cpp,
        "sddmm": lambda: sgnn.explain("ij,ik,jk->ij", S, dense_rand(0, 30, 5, dtype=f32),
                                      dense_rand(1, 20, 5, dtype=f32)).cpp,
        "attention": lambda: sgnn.explain(ATTENTION, **attention_operands(S)).cpp,
        "max": lambda: sgnn.explain(sgnn.compute((i, k), sgnn.max_(j, A[i, j] * X[j, k])),
                                    A=S, X=dense_rand(0, 20, 16, dtype=f32)).cpp,
        "min_pattern": lambda: sgnn.explain(sgnn.compute((i, k), sgnn.min_(j, sgnn.pattern(A[i, j]) * X[j, k])),
                                            A=S, X=dense_rand(0, 20, 16, dtype=f32)).cpp,
        "union_reduce": lambda: sgnn.explain(sgnn.compute((i, k), sgnn.sum_(j, (A[i, j] + B[i, j]) * X[j, k])),
                                             A=S, B=csr_other(S),
                                             X=dense_rand(0, 20, 8, dtype=f32)).cpp,
        "assembled": lambda: sgnn.explain(sgnn.compute((i, j), A[i, j] + B[i, j]), A=S, B=csr_other(S)).cpp,
        "csc": lambda: sgnn.explain(sgnn.compute((i, k), sgnn.sum_(j, A[j, i] * X[j, k])),
                                    A=csc, X=dense_rand(0, 30, 16, dtype=f32)).cpp,
        "contract3": lambda: sgnn.explain(sgnn.compute((i, c), sgnn.sum_((j, h), A[i, j] * X[j, h, c])),
                                          A=S, X=dense_rand(0, 20, 3, 16, dtype=f32)).cpp,
        "gcn": lambda: sgnn.explain(gcn, **gcn_ops).cpp,
        "spmm_named": lambda: sgnn.explain(spmm, A=S, X=dense_rand(0, 20, 40, dtype=f32)).cpp,
        "spmm_f64": lambda: sgnn.explain("ik,kj->ij", S.with_values(S.values.double()),
                                         dense_rand(0, 20, 24)).cpp,
        "walk": lambda: sgnn.explain(sgnn.compute((i, k), sgnn.sum_(j, (A[i, j] + B[i, j]) * X[j, k])),
                                     A=S, B=dense_rand(1, 30, 20, dtype=f32), X=dense_rand(0, 20, 8, dtype=f32)).cpp,
        "serial": lambda: sgnn.explain("ij->", S).cpp,
    }


def csr_other(S):
    """A second 30 x 20 CSR matrix with another pattern (float32 values)."""
    return make_sparse(random_coo(11, *S.shape, "empty_rows"), "csr", f32, i32).operand


GOLDEN_NAMES = ["spmm", "spmm_w64", "spmm_w128", "spmm_w256", "spmm_bf16", "spmm_prefetch", "sddmm",
                "attention", "max", "min_pattern", "union_reduce", "assembled", "csc", "contract3", "gcn",
                "spmm_named", "spmm_f64", "walk", "serial"]


@pytest.mark.parametrize("name", GOLDEN_NAMES)
def test_golden_cpp(S, name, monkeypatch):
    # the corpus is AVX-512's (16-line register tiles) whatever this CPU's vector registers
    monkeypatch.setattr(tiling, "register_tile_lines", lambda: tiling.WIDE_TILE_LINES)
    monkeypatch.setattr(runtime, "_plans", runtime.LRU(runtime.PLANS))
    cpp = strip_comments(canonical_kernels(S)[name]())
    path = GOLDEN / f"{name}.cpp"
    if os.environ.get("SGNN_UPDATE_GOLDEN") == "1":
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(cpp)
        return
    assert path.exists(), f"no golden file {path}; create it with SGNN_UPDATE_GOLDEN=1"
    want = path.read_text()
    if cpp != want:
        diff = "".join(difflib.unified_diff(want.splitlines(True), cpp.splitlines(True), f"golden/{name}.cpp",
                                            "generated", n=2))
        pytest.fail(f"generated C++ for {name} differs from tests/golden/{name}.cpp (if intended, "
                    f"refresh with SGNN_UPDATE_GOLDEN=1):\n{diff[:6000]}")
