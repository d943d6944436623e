"""Scheduling and tiling, asserted on ``Schedule`` fields and ``Decision``s: loop order, output
format, conversions, the tiled index (the schedule names it; ``tiling.decide`` fixes the tile)."""
from __future__ import annotations

import pytest
import torch

import sgnn
from sgnn.engine import tiling
from sgnn.engine.formats import CSR
from sgnn.engine.runtime import operand_info
from sgnn.engine.schedule import Decision, make_schedule

from engine_cases import dense_rand, make_sparse, random_coo

f32, i32 = torch.float32, torch.int32
i, j, k = sgnn.indices("i j k")
A, B, X = sgnn.tensors("A B X")
SPMM = sgnn.compute((i, k), sgnn.sum_(j, A[i, j] * X[j, k]))


@pytest.fixture(scope="module")
def S():
    return make_sparse(random_coo(1, 30, 20, "empty_rows"), "csr", f32, i32).operand


def sched(stmt, **ops):
    return make_schedule(stmt, {n: operand_info(t) for n, t in ops.items()})


def test_spmm_schedule(S):
    s = sched(SPMM, A=S, X=dense_rand(0, 20, 5, dtype=f32))
    assert s.outer == ("i",) and s.inner == ("k",) and s.output == "dense" and s.parallel
    assert list(s.reduce_order.values()) == [("j",)]
    assert s.tile_var == "k" and not hasattr(s, "tile")  # the schedule does not pretend to hold a tile
    assert s.partition_slot is not None and s.partition_slot.operand == "A"
    assert all(isinstance(d, Decision) for d in s.decisions)


def test_discordant_operand_is_converted(S):
    s = sched(SPMM, A=S.to("csc"), X=dense_rand(0, 20, 5, dtype=f32))
    (slot,) = [sl for sl in s.slots.values() if sl.sparse]
    assert slot.convert_to == CSR and any("csc -> csr" in str(d) for d in s.decisions)


def test_sampled_and_assembled_outputs(S):
    s = sched(sgnn.compute((i, j), A[i, j] * sgnn.sum_(k, X[i, k] * B[j, k])), A=S,
              X=dense_rand(0, 30, 4, dtype=f32), B=dense_rand(1, 20, 4, dtype=f32))
    assert s.output == "sampled" and s.driver.name == "A"
    s = sched(sgnn.compute((i, j), A[i, j] + B[i, j]), A=S, B=S)
    assert s.output == "assembled" and s.out_format.codes == "ds"


def test_serial_without_sparse_output_index(S):
    s = sched(sgnn.compute((), sgnn.sum_((i, j), A[i, j])), A=S)
    assert s.outer == () and not s.parallel and s.tile_var is None


@pytest.mark.parametrize("width,size,exact", [(64, 64, True), (16, 16, True), (40, 64, False), (5, 16, False),
                                              (300, None, False)])
def test_tile_decided_once_from_sizes(S, width, size, exact):
    size = size or tiling.register_tile_lines() * 16  # wider than any bucket: the widest register tile
    s = sched(SPMM, A=S, X=dense_rand(0, 20, width, dtype=f32))
    tile, why = tiling.decide(s, {"i": 30, "j": 20, "k": width})
    assert (tile.var, tile.size, tile.exact, tile.outer) == ("k", size, exact, False)
    assert str(why).startswith(f"tile k by {size}")


def test_no_tile_without_a_tiled_index(S):
    s = sched(sgnn.compute((i,), sgnn.sum_(j, A[i, j])), A=S)
    assert tiling.decide(s, {"i": 30, "j": 20}) == (None, None)


def test_wide_gather_moves_the_tile_outermost(S, monkeypatch):
    monkeypatch.setattr(tiling, "cache_sizes", lambda: {1: 256, 2: 512, 3: 1024})
    s = sched(SPMM, A=S, X=dense_rand(0, 20, 300, dtype=f32))
    tile, why = tiling.decide(s, {"i": 30, "j": 20, "k": 300})
    assert tile.outer and tile.prefetch and "outermost" in str(why)
