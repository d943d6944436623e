"""``explain()`` fields, structural properties of generated kernels, and golden C++.

Tests assert on ``Explanation`` fields, never on its printed layout. The structural tests count
parallel regions and check workspace sizes in the C++ (one loop nest for attention, no buffer
sized by the number of nonzeros). Golden sources of a corpus of representative kernels live in
``tests/golden``; refresh them on purpose with ``SGNN_UPDATE_GOLDEN=1``.
"""
from __future__ import annotations

import difflib
import os
import random
import re
import string
import uuid
from pathlib import Path

import pytest
import torch

import sgnn
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


def parallel_regions(cpp: str) -> int:
    return len(re.findall(r"#pragma omp parallel\b", cpp))


def workspace_sizes(cpp: str) -> list[str]:
    """Sizes of every workspace: per-thread ``sg::scratch<T>(n)`` buffers and stack arrays ``T w[n];``."""
    heap = re.findall(r"sg::scratch<\w+>\(([^;]*)\);", cpp)
    stack = re.findall(r"^\s*T \w+\[([^\]]+)\];\s*$", cpp, flags=re.M)
    return heap + stack


# ---------------------------------------------------------------- fields


def test_spmm_fields(S):
    x = dense_rand(0, 20, 5, dtype=f32)
    e = sgnn.explain("ik,kj->ij", S, x)
    assert e.loop_order == ("i", "j")
    assert e.output == "dense"
    assert e.parallel == "over i"
    assert e.tile is not None and e.tile.var == "j" and not e.tile.outer
    assert e.formats["t0[i,k]"].startswith("csr") and "int32" in e.formats["t0[i,k]"]
    assert e.formats["t1[k,j]"].startswith("dense") and "float32" in e.formats["t1[k,j]"]
    assert any("loop order" in str(d) for d in e.decisions)
    assert any(str(d).startswith("parallel loop i") for d in e.decisions)
    assert any(str(d).startswith("tile j") for d in e.decisions)
    assert "#pragma omp" in e.cpp and 'extern "C"' in e.cpp and e.cpp_lines > 10
    assert re.fullmatch(r"[0-9a-f]{32}", e.cache_key)
    assert e.conversions == []
    assert "v_i" in e.loop_ir and "parallel" in e.loop_ir
    assert str(e)  # printable


def test_sddmm_output_is_sampled(S):
    e = sgnn.explain("ij,ik,jk->ij", S, dense_rand(0, 30, 5, dtype=f32), dense_rand(1, 20, 5, dtype=f32))
    assert e.output == "sampled" and e.parallel == "over i"
    assert any("sampled" in str(d) for d in e.decisions)


def test_reduction_to_scalar_is_serial(S):
    e = sgnn.explain("ij->", S)
    assert e.output == "dense" and e.parallel == "serial" and e.loop_order == ()
    assert "#pragma omp parallel" not in e.cpp


def test_addition_output_is_assembled(S):
    e = sgnn.explain(sgnn.compute((i, j), A[i, j] + B[i, j]), A=S, B=S.with_values(None))
    assert e.output == "assembled"
    assert any("union" in str(d) for d in e.decisions)
    assert "count" in e.cpp and "compute" in e.cpp  # two phases: count, then fill


def test_discordant_input_is_converted_and_says_so(S):
    x = dense_rand(0, 20, 5, dtype=f32)
    e = sgnn.explain("ik,kj->ij", S.to("csc"), x)
    assert "converted from csc" in e.formats["t0[i,k]"]
    assert any("csc -> csr" in d for d in e.conversions)
    e = sgnn.explain("ik,kj->ij", S.to("coo"), x)
    assert "converted from coo" in e.formats["t0[i,k]"]


def test_pattern_only_operand_is_listed(S):
    e = sgnn.explain("ij->i", S.with_values(None))
    assert "pattern-only" in e.formats["t0[i,j]"]
    assert "_val" not in e.cpp  # no value array is read


def test_cache_hit_field(tmp_path, S):
    """A kernel compiled for the first time is a miss; the same source reached again is a hit."""
    a, b = random.Random(uuid.uuid4().int).sample(string.ascii_letters, 2)
    spec = f"{a}{b}->{a}"  # index names no other test uses: not memoised in this process
    with sgnn.config(cache_dir=tmp_path):
        first = sgnn.explain(spec, S)
        again = sgnn.explain(f"{a}{b} -> {a}", S)  # another spelling: another plan, the same C++
    assert not first.cache_hit and again.cache_hit
    assert first.cache_key == again.cache_key
    assert list(tmp_path.glob(f"*/{first.cache_key}.so"))


# ---------------------------------------------------------------- structure


def test_attention_is_one_loop_nest_without_edge_buffers(S):
    """GAT-style attention: max, normaliser and weighted sum fuse into ONE parallel loop nest,
    and every workspace is sized by the dense output indices (heads, channels), never by nnz."""
    e = sgnn.explain(ATTENTION, **attention_operands(S))
    assert parallel_regions(e.cpp) == 1
    assert e.parallel == "over i" and e.output == "dense"
    sizes = workspace_sizes(e.cpp)
    assert sizes, "expected per-row workspaces"
    allowed = {"N_h", "N_c", "TILE"}
    for size in sizes:
        tokens = set(re.findall(r"[A-Za-z_]\w*", size))
        assert tokens <= allowed, f"workspace of size {size!r} depends on {tokens - allowed}"
    assert "nnz" not in e.cpp
    out = sgnn.evaluate(ATTENTION, **attention_operands(S))
    assert out.shape == (30, 2, 5) and torch.isfinite(out).all()


@pytest.mark.parametrize("spec,n", [("ik,kj->ij", 2), ("ij,ik,jk->ij", 3), ("ij,j->i", 2)])
def test_one_parallel_region(S, spec, n):
    ops = [S, dense_rand(0, 20, 5, dtype=f32), dense_rand(1, 20, 5, dtype=f32)]
    if spec == "ij,ik,jk->ij":
        ops[1] = dense_rand(0, 30, 5, dtype=f32)
    if spec == "ij,j->i":
        ops[1] = dense_rand(0, 20, dtype=f32)
    e = sgnn.explain(spec, *ops[:n])
    assert parallel_regions(e.cpp) == 1
    assert all(not re.search(r"pos|crd|nnz", s) for s in workspace_sizes(e.cpp))


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
    from sgnn.layers import kernels
    m, n = S.shape
    bf = torch.bfloat16
    Sb = S.with_values(S.values.to(bf))
    csc = S.to("csc")  # 30 x 20 stored column-major: A[j, i] iterates i then j
    wide = make_sparse(random_coo(4, m, 20000, "empty_rows"), "csr", f32, i32).operand
    k = sgnn.indices("k")[0]
    gcn = kernels.gcn(True, True, True)
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
def test_golden_cpp(S, name):
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
