"""``explain()`` fields: tests assert on ``Explanation`` fields, never on its printed layout.

Structural properties of kernels are asserted on the loop IR (tests/test_lower.py); the golden
C++ corpus is in tests/test_codegen.py.
"""
from __future__ import annotations

import random
import re
import string
import uuid

import pytest
import torch

import sgnn
from engine_cases import dense_rand, make_sparse, random_coo

f32, i32 = torch.float32, torch.int32

i, j = sgnn.indices("i j")
A, B = sgnn.tensors("A B")


@pytest.fixture(scope="module")
def S():
    """A 30 × 20 CSR matrix (float32 values, int32 indices) with empty rows."""
    return make_sparse(random_coo(1, 30, 20, "empty_rows"), "csr", f32, i32).operand


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
    assert 'extern "C"' in e.cpp and e.cpp_lines > 10
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


def test_addition_output_is_assembled(S):
    e = sgnn.explain(sgnn.compute((i, j), A[i, j] + B[i, j]), A=S, B=S.with_values(None))
    assert e.output == "assembled"
    assert any("union" in str(d) for d in e.decisions)


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


