"""Expression nodes: structural equality, cached structural hashes (a Statement is its own memo
key), pickling across the per-process hash."""
from __future__ import annotations

import pickle

import torch

import sgnn
from sgnn.engine import runtime
from sgnn.engine.expr import Access, Const, Reduce, compute, indices, softmax, sum_, tensors

i, j, k = indices("i j k")
A, X = tensors("A X")


def spmm():
    return compute((i, k), sum_(j, A[i, j] * X[j, k]))


def test_equal_trees_are_equal_and_hash_alike():
    a, b = spmm(), spmm()
    assert a is not b and a == b and hash(a) == hash(b)
    assert compute((i, k), sum_(j, A[i, j] * X[k, j])) != a


def test_hash_is_cached_on_the_node():
    e = spmm().expr
    assert e._h == 0
    h = hash(e)
    assert e._h == h and hash(e) == h
    assert isinstance(e, Reduce) and e.body._h != 0  # children cached on the way


def test_cached_hash_is_not_pickled():
    e = sum_(j, softmax(j, A[i, j], over=A[i, j]) * X[j, k])
    hash(e)
    back = pickle.loads(pickle.dumps(e))
    assert back == e and back._h == 0 and hash(back) == hash(e)


def test_fields_and_repr_unchanged():
    assert Access("A", ("i", "j")) == A[i, j] and repr(A[i, j]) == "Access(name='A', idx=('i', 'j'))"
    assert Const(2.0) == Const(2.0) and str(Const(2.0)) == "2.0"


def test_statement_is_its_own_memo_key():
    """Two separately built, equal statements reach one plan without a hand-typed key."""
    S = sgnn.SparseTensor.from_dense(torch.eye(4))
    ops = {"A": S, "X": torch.ones(4, 3)}
    p1 = runtime.plan_for(spmm(), ops)
    p2 = runtime.plan_for(spmm(), ops)
    assert p1 is p2
    assert torch.equal(runtime.evaluate(spmm(), ops), torch.ones(4, 3))
    assert torch.equal(runtime.evaluate(spmm(), ops, memo_key="spmm-test"), torch.ones(4, 3))  # still accepted
