"""Rewrites before scheduling: invariant factors leave sums; softmax stays a node whose terms
(row maximum, normaliser, value) are named by ``softmax_terms``."""
from __future__ import annotations

from sgnn.engine.expr import BinOp, Call, Pattern, Reduce, Softmax, indices, leaky_relu, softmax, sum_, tensors
from sgnn.engine.rewrite import factors, hoist_factors, normalize, product, softmax_terms

i, j, k = indices("i j k")
A, D, X, Y = tensors("A D X Y")


def test_factors_and_product_round_trip():
    e = A[i, j] * (D[i] * X[j, k])
    assert factors(e) == [A[i, j], D[i], X[j, k]]
    assert factors(product(factors(e))) == factors(e)


def test_invariant_factor_leaves_the_sum():
    e = hoist_factors(sum_(j, D[i] * A[i, j] * X[j, k]))
    assert isinstance(e, BinOp) and e.a == D[i] and isinstance(e.b, Reduce)
    assert factors(e.b.body) == [A[i, j], X[j, k]]


def test_sddmm_mask_moves_to_the_output_level():
    e = hoist_factors(sum_(k, A[i, j] * X[i, k] * Y[j, k]))
    assert e.a == A[i, j] and e.b == sum_(k, X[i, k] * Y[j, k])


def test_softmax_stays_a_node():
    e = sum_(j, softmax(j, leaky_relu(D[i] + X[j, k]), over=A[i, j]) * Y[j, k])
    n = normalize(e)
    assert any(isinstance(f, Softmax) for f in factors(n.body))


def test_softmax_terms():
    sm = softmax(j, D[i] + X[j, k], over=A[i, j])
    m, z, value = softmax_terms(sm)
    assert m == Reduce("max", ("j",), Pattern(A[i, j]) * sm.body)
    assert z.op == "sum" and z.idx == ("j",) and isinstance(factors(z.body)[1], Call)
    assert value == Pattern(A[i, j]) * Call("exp", (sm.body - m,)) / z
    assert softmax_terms(sm) == (m, z, value)
