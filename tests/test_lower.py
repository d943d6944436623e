"""Lowering, asserted on loop-IR fields (not on the C++): parallel regions, workspace sizes, the
levels each loop iterates or locates, register tiles, prefetches and the row softmax."""
from __future__ import annotations

import pytest
import torch

import sgnn
from sgnn.engine import tiling
from sgnn.engine.expr import Softmax, walk as expr_walk
from sgnn.engine.loopir import (Array, Assign, For, Let, Load, Locate, Parallel, PosFor, Size, TileAcc,
                                TileAxpy, TileSpill, TileWidth, Workspace, show, walk)
from sgnn.engine.lower import lower
from sgnn.engine.runtime import Plan, as_operand, operand_info
from sgnn.engine.verify import verify

from engine_cases import dense_rand, make_sparse, random_coo

f32, i32 = torch.float32, torch.int32
i, j, h, c, k = sgnn.indices("i j h c k")
A, B, X, AD, AS = sgnn.tensors("A B X ad as_")
ATTENTION = sgnn.compute((i, h, c), sgnn.sum_(j, sgnn.softmax(
    j, sgnn.leaky_relu(AD[i, h] + AS[j, h], 0.2), over=A[i, j]) * X[j, h, c]))
SPMM = sgnn.compute((i, k), sgnn.sum_(j, A[i, j] * X[j, k]))


@pytest.fixture(scope="module")
def S():
    """A 30 × 20 CSR matrix (float32 values, int32 indices) with empty rows."""
    return make_sparse(random_coo(1, 30, 20, "empty_rows"), "csr", f32, i32).operand


def lowered(stmt, **ops):
    """(plan, tile, functions) of ``stmt`` on ``ops``: scheduled, tiled for their sizes, lowered, verified."""
    ops = {n: as_operand(t, n) for n, t in ops.items()}
    plan = Plan(stmt, {n: operand_info(t) for n, t in ops.items()})
    tile, _ = tiling.decide(plan.sched, plan.sizes(ops))
    fns = lower(plan.sched, tile, plan.params)
    verify(fns, plan.params)
    return plan, tile, fns


def nodes(fns, kind):
    return [n for fn in fns for n in walk(fn.body) if isinstance(n, kind)]


def teams(fns) -> list[Parallel]:
    return [p for p in nodes(fns, Parallel) if p.threads]


def sizes_in(e) -> set:
    """Index names whose ``Size`` an IR expression mentions (``TILE`` counts as ``"TILE"``)."""
    if isinstance(e, Size):
        return {e.index}
    if isinstance(e, TileWidth):
        return {"TILE"}
    out = set()
    for v in getattr(e, "__slots__", ()):
        x = getattr(e, v)
        for y in (x if isinstance(x, tuple) else (x,)):
            if hasattr(y, "__slots__"):
                out |= sizes_in(y)
    return out


def workspaces(fns) -> list[Workspace]:
    return nodes(fns, Workspace) + [b for p in nodes(fns, Parallel) for b in p.buffers]


def attention_operands(S, heads=2, width=5):
    m, n = S.shape
    return dict(A=S, ad=dense_rand(1, m, heads, dtype=f32), as_=dense_rand(2, n, heads, dtype=f32),
                X=dense_rand(3, n, heads, width, dtype=f32))


def test_attention_is_one_loop_nest_without_edge_buffers(S):
    """GAT attention: max, normaliser and weighted sum in ONE parallel loop nest, every workspace
    sized by the dense output indices (heads, channels), never by the nonzeros."""
    plan, _, fns = lowered(ATTENTION, **attention_operands(S))
    assert len(teams(fns)) == 1
    ws = workspaces(fns)
    assert ws, "expected per-row workspaces"
    for w in ws:
        assert sizes_in(w.size) <= {"h", "c", "TILE"}, f"workspace {w.name} sized by {sizes_in(w.size)}"


def test_softmax_stays_a_node_until_lowering(S):
    """The schedule keeps ``softmax`` in the statement; its lowering walks each row twice (the
    maximum, then the weights), both passes over A's compressed level."""
    plan, _, fns = lowered(ATTENTION, **attention_operands(S))
    assert any(isinstance(x, Softmax) for x in expr_walk(plan.sched.stmt.expr))
    passes = [p for p in nodes(fns, PosFor) if p.level.operand == "a_A" and p.level.level == 1]
    assert len(passes) == 2 * 2  # two passes, on the full-tile and the partial-tile path
    out = sgnn.evaluate(ATTENTION, **attention_operands(S))
    assert out.shape == (30, 2, 5) and torch.isfinite(out).all()


@pytest.mark.parametrize("spec,n", [("ik,kj->ij", 2), ("ij,ik,jk->ij", 3), ("ij,j->i", 2)])
def test_one_parallel_region(S, spec, n):
    ops = [S, dense_rand(0, 20, 5, dtype=f32), dense_rand(1, 20, 5, dtype=f32)]
    if spec == "ij,ik,jk->ij":
        ops[1] = dense_rand(0, 30, 5, dtype=f32)
    if spec == "ij,j->i":
        ops[1] = dense_rand(0, 20, dtype=f32)
    stmt = sgnn.engine.expr.parse_einsum(spec, n)
    _, _, fns = lowered(stmt, **{f"t{m}": t for m, t in enumerate(ops[:n])})
    assert len(teams(fns)) == 1
    for w in workspaces(fns):  # sized by dense indices only: no Load of pos / crd in a size
        assert not any(isinstance(x, Load) for x in _exprs(w.size))


def _exprs(e):
    yield e
    for v in getattr(e, "__slots__", ()):
        x = getattr(e, v)
        for y in (x if isinstance(x, tuple) else (x,)):
            if hasattr(y, "__slots__"):
                yield from _exprs(y)


def test_reduction_to_scalar_is_serial(S):
    _, _, fns = lowered(sgnn.engine.expr.parse_einsum("ij->", 1), t0=S)
    assert teams(fns) == [] and len(nodes(fns, Parallel)) == 1


def test_assembled_output_counts_then_fills(S):
    plan, _, fns = lowered(sgnn.compute((i, j), A[i, j] + B[i, j]), A=S, B=S.with_values(None))
    assert [f.name for f in fns] == ["count", "compute"]
    written = {a.target.array for a in nodes(fns[1:], Assign) if isinstance(a.target, Load)}
    assert {Array("out", "crd"), Array("out", "val")} <= written
    assert Array("out", "pos") in {a.target.array for a in nodes(fns[:1], Assign) if isinstance(a.target, Load)}


def test_pattern_only_operand_reads_no_values(S):
    _, _, fns = lowered(sgnn.engine.expr.parse_einsum("ij->i", 1), t0=S.with_values(None))
    loads = [x for fn in fns for n in walk(fn.body) for x in _exprs(getattr(n, "value", None)) if isinstance(x, Load)]
    assert not any(x.array.role == "val" for x in loads)
    assert not any(p.array and p.array.role == "val" for p in fns[0].params)


def test_dense_level_is_located_compressed_level_iterated(S):
    """CSR: row positions by ``Locate`` (dense level 0), nonzeros by ``PosFor`` from that position."""
    _, _, fns = lowered(SPMM, A=S, X=dense_rand(0, 20, 5, dtype=f32))
    locs = [n for n in nodes(fns, Let) if isinstance(n.value, Locate)]
    assert locs and all(n.value.operand == "a_A" and n.value.level == 0 for n in locs)
    loops = nodes(fns, PosFor)
    assert loops and {p.level.parent.name for p in loops} == {locs[0].name}


@pytest.mark.parametrize("width,exact", [(64, True), (40, False)])
def test_register_tile(S, width, exact):
    plan, tile, fns = lowered(SPMM, A=S, X=dense_rand(0, 20, width, dtype=f32))
    assert tile.var == "k" and tile.exact == exact
    accs, axpys, spills = nodes(fns, TileAcc), nodes(fns, TileAxpy), nodes(fns, TileSpill)
    assert accs and len(accs) == len(spills)
    assert {a.acc for a in axpys} <= {a.name for a in accs}
    assert any(a.end is None for a in axpys) and any(a.end is not None for a in axpys)  # full / partial tile
    tile_loops = [f for f in nodes(fns, For) if f.kind == "tile"]
    assert len(tile_loops) == 1 and tile_loops[0].step == TileWidth()


def test_prefetch_when_gathered_rows_overflow_l2(S, monkeypatch):
    monkeypatch.setattr(tiling, "cache_sizes", lambda: {1: 32, 2: 64, 3: 1 << 30})
    _, tile, fns = lowered(SPMM, A=S, X=dense_rand(0, 20, 16, dtype=f32))
    assert tile.prefetch
    pfs = [x for p in nodes(fns, PosFor) for x in p.prefetch]
    assert pfs and all(x.array == Array("a_X", "dense") for x in pfs)


def test_show_prints_loop_notation_without_c(S):
    _, _, fns = lowered(SPMM, A=S, X=dense_rand(0, 20, 64, dtype=f32))
    text = "\n".join(show(fn.body) for fn in fns)
    assert "for v_i" in text and "parallel" in text and "tile" in text
    for c_syntax in ("sg::", "int64_t", "[", ";", "#pragma"):
        assert c_syntax not in text, c_syntax


def test_reduction_nested_in_a_sparse_reduction_is_refused_by_name():
    """Σ_j A_ij Σ_c G_ihc X_jhc: the inner sum needs j and the innermost dense h; a clear refusal
    before any C++ exists (it was a bare KeyError in the lowering)."""
    i, j, h, c = sgnn.indices("i j h c")
    A, G, X = sgnn.tensors("A G X")
    stmt = sgnn.compute((i, h), sgnn.sum_(j, sgnn.pattern(A[i, j]) * sgnn.sum_(c, G[i, h, c] * X[j, h, c])))
    adj = sgnn.SparseTensor.from_edge_index(torch.tensor([[0, 1, 2], [1, 2, 0]]), num_nodes=3)
    with pytest.raises(sgnn.errors.NotSupported, match="evaluate the inner reduction as a statement"):
        sgnn.evaluate(stmt, A=adj, G=torch.randn(3, 2, 4), X=torch.randn(3, 2, 4))
