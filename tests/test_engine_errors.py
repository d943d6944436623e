"""Bad inputs raise a clear ``sgnn.errors`` exception before native code runs, never crash.

Each case names the error kind and a fragment of the message a user needs to fix the call
("expected … (got …)"). Cases that could crash the process if a check were missing run in a
child process, so a segfault fails one test instead of the session.
"""
from __future__ import annotations

import random
import string
import subprocess
import sys
import textwrap
import uuid

import pytest
import torch

from child_helpers import assert_each_raises_in_child

import sgnn
from sgnn.errors import CompilerError, NotSupported, SgnnError, UserError

S = sgnn.SparseTensor
t = torch.tensor


@pytest.fixture(scope="module")
def A():
    return S.from_dense(torch.eye(3))


# ---------------------------------------------------------------- constructing tensors

NAN = float("nan")


def coo(row, col, vals=None, shape=(3, 3)):
    vals = torch.ones(len(row)) if vals is None else t(vals)
    return lambda: S.from_coo(t(row), t(col), vals, shape)


def csr(pos, crd, vals=None, shape=(2, 3)):
    vals = torch.ones(len(crd)) if vals is None else t(vals)
    return lambda: S.from_csr(t(pos), t(crd), vals, shape)


def raw(shape, pos, crd, vals, dtypes=(torch.int64, torch.int64)):
    """The constructor itself: CSR level arrays as given."""
    return lambda: S(shape, "csr", [None, t(pos, dtype=dtypes[0])], [None, t(crd, dtype=dtypes[1])], t(vals))


BAD_CONSTRUCTORS = {  # name: (constructor, regex the message must match)
    "coo row out of range": (coo([0, 3], [0, 1]), r"\[0, 3\).*3"),
    "coo col out of range": (coo([0, 1], [0, 9]), r"\[0, 3\).*9"),
    "coo negative row": (coo([0, -1], [0, 1]), r"-1"),
    "coo length mismatch": (coo([0, 1], [0], [1.0, 1.0]), r"same length|one length"),
    "coo values length": (coo([0, 1], [0, 1], [1.0, 1.0, 1.0]), r"values"),
    "csr crd out of range": (csr([0, 1, 2], [0, 5]), r"\[0, 3\).*5"),
    "csr negative crd": (csr([0, 1, 2], [0, -1]), r"-1"),
    "csr unsorted crd": (csr([0, 2], [2, 1], shape=(1, 3)), r"sorted.*2 before 1.*sort=True"),
    "csr duplicate crd": (csr([0, 2], [1, 1], shape=(1, 3)), r"unique.*1 before 1"),
    "csr non-monotone pos": (csr([0, 2, 1, 3], [0, 1, 2], shape=(3, 3)), r"non-decreasing pos"),
    "csr pos[-1] != nnz": (csr([0, 1, 2], [0, 1, 2]), r"pos\[-1\]"),
    "csr pos[0] != 0": (csr([1, 1, 2], [0, 1]), r"pos\[0\]"),
    "csr pos length": (csr([0, 2], [0, 1]), r"pos of length 3"),
    "csr float crd": (csr([0, 1], [0.5], shape=(1, 3)), r"int32 or int64"),
    "csr values length": (csr([0, 1], [0], [1.0, 1.0], shape=(1, 3)), r"expected 1 values"),
    "csr NaN value": (csr([0, 2], [0, 1], [1.0, NAN], shape=(1, 3)), r"NaN at position 1"),
    "coo NaN value": (coo([0], [0], [NAN]), r"NaN"),
    "constructor NaN value": (raw((1, 1), [0, 1], [0], [NAN]), r"NaN"),
    "with_values NaN": (lambda: S.from_dense(torch.eye(2)).with_values(t([1.0, NAN])), r"NaN"),
    "torch csr NaN": (lambda: S.from_torch(torch.eye(2).to_sparse_csr() * NAN), r"NaN"),
    "int32 crd overflow": (raw((3, 2**31 + 5), [0, 1, 1, 1], [5], [1.0], (torch.int32, torch.int32)),
                           r"int32.*int64"),
    "mixed pos/crd dtypes": (raw((1, 3), [0, 1], [0], [1.0], (torch.int32, torch.int64)), r"one index dtype"),
    "bad format code": (lambda: S.from_dense(torch.eye(2), format="dx"), r"level codes"),
    "meta values": (lambda: S.from_csr(t([0, 1]), t([0]), torch.empty(1, device="meta"), (1, 1)), r"CPU"),
}


@pytest.mark.parametrize("case", list(BAD_CONSTRUCTORS))
def test_bad_sparse_tensor_is_user_error(case):
    make, match = BAD_CONSTRUCTORS[case]
    with pytest.raises(UserError, match=match):
        make()


def test_sort_and_sum_duplicates_repair_a_csr():
    """The remedies the unsorted / duplicate messages suggest work."""
    pos, crd, val = t([0, 3, 3]), t([2, 0, 2]), t([1.0, 2.0, 3.0])
    a = S.from_csr(pos, crd, val, (2, 3), sort=True, sum_duplicates=True)
    assert a.crd[1].tolist() == [0, 2] and a.values.tolist() == [2.0, 4.0]
    assert torch.equal(a.to_dense(), t([[2.0, 0.0, 4.0], [0.0, 0.0, 0.0]]))


def test_infinite_values_are_allowed():
    """Only NaN is rejected; ±inf is a legitimate value (a mask, an overflowed score)."""
    assert S.from_csr(t([0, 1]), t([0]), t([float("inf")]), (1, 1)).nnz == 1


# ---------------------------------------------------------------- calling einsum / evaluate

BAD_SPECS = ["ik,kj->ij->", "i1,kj->ij", "ik,kj->iz", "ik->ik", "ik,kj,jl->il", "ikk,kj->ij", "ik,kj->ii",
             "", "->ij", "ik;kj->ij", 42]


@pytest.mark.parametrize("spec", BAD_SPECS, ids=[repr(s) for s in BAD_SPECS])
def test_malformed_einsum_spec(A, spec):
    with pytest.raises(UserError, match="einsum"):
        sgnn.einsum(spec, A, torch.ones(3, 2))


def test_bad_einsum_operands(A):
    with pytest.raises(UserError, match=r"size mismatch for index 'k'.*3.*4"):
        sgnn.einsum("ik,kj->ij", A, torch.ones(4, 2))
    with pytest.raises(UserError, match=r"dtype mismatch.*float32.*float64"):
        sgnn.einsum("ik,kj->ij", A, torch.ones(3, 2, dtype=torch.float64))
    with pytest.raises(UserError, match=r"int64"):
        sgnn.einsum("ik,kj->ij", A, torch.ones(3, 2, dtype=torch.int64))
    with pytest.raises(UserError, match=r"float16"):
        sgnn.einsum("ik,kj->ij", A, torch.ones(3, 2, dtype=torch.float16))
    with pytest.raises(UserError, match=r"2 indices.*1 dimensions"):
        sgnn.einsum("ik,kj->ij", A, torch.ones(3))
    with pytest.raises(UserError, match=r"expected a torch.Tensor"):
        sgnn.einsum("ik,kj->ij", A, [[1.0, 2.0]] * 3)


@pytest.mark.parametrize("position", [0, 1])
def test_meta_tensor_is_user_error(A, position):
    ops = [A, torch.ones(3, 3)]
    ops[position] = torch.empty(3, 3, device="meta")
    with pytest.raises(UserError, match=r"CPU.*meta"):
        sgnn.einsum("ik,kj->ij", *ops)


def test_bad_statements(A):
    i, j = sgnn.indices("i j")
    X, Y = sgnn.tensors("X Y")
    with pytest.raises(UserError, match=r"\['j'\].*sum_"):
        sgnn.compute((i,), X[i, j])
    with pytest.raises(UserError, match=r"repeated output index"):
        sgnn.compute((i, i), X[i, i])
    with pytest.raises(UserError, match=r"no tensor bound to \['Y'\]"):
        sgnn.evaluate(sgnn.compute((i,), sgnn.sum_(j, X[i, j] * Y[j])), X=A)
    with pytest.raises(UserError, match=r"Statement"):
        sgnn.evaluate("ij->i", X=A)
    with pytest.raises(UserError, match=r"softmax"):
        sgnn.softmax(j, X[i, j], over=Y[i])
    with pytest.raises(UserError, match=r"unknown setting"):
        with sgnn.config(no_such_setting=1):
            pass


def test_non_contiguous_dense_operand_gives_the_right_result(A):
    base = torch.arange(12.0).reshape(4, 3)
    x = base.t()[:, 1:]  # 3 × 3 view with strides (1, 3): not contiguous
    assert not x.is_contiguous()
    B = S.from_dense(t([[0.0, 2.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]]))
    assert torch.equal(sgnn.einsum("ik,kj->ij", B, x), B.to_dense() @ x)
    assert torch.equal(sgnn.einsum("ij,j->i", B, base[1:, 0]), B.to_dense() @ base[1:, 0])  # strided vector


# ---------------------------------------------------------------- no crash, even in a child process


def _child(code: str, **env) -> subprocess.CompletedProcess:
    import os
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=240, env={**os.environ, **env})


def test_bad_inputs_never_reach_native_code():
    """Every bad input of this file in one child: each raises SgnnError, the process exits cleanly."""
    assert_each_raises_in_child("""
        import torch, sgnn
        S, t = sgnn.SparseTensor, torch.tensor
        A = S.from_dense(torch.eye(3))
        bad = [
            lambda: S.from_csr(t([0, 1, 2]), t([0, 2**20]), torch.ones(2), (2, 3)),
            lambda: S.from_csr(t([0, 5, 2]), t([0, 1]), torch.ones(2), (2, 3)),
            lambda: S.from_coo(t([0, -7]), t([0, 1]), torch.ones(2), (3, 3), format="csc"),
            lambda: sgnn.einsum("ik,kj->ij", A, torch.ones(2, 2)),
            lambda: sgnn.einsum("ij,ik,jk->ij", A, torch.ones(3, 4), torch.ones(3, 5)),
            lambda: sgnn.einsum("ik,kj->ij", A, torch.empty(3, 3, device="meta")),
        ]
    """)


def _fresh_spec() -> str:
    """SpMM under index names no other test uses: kernels are memoised per spec in-process."""
    a, b, c = random.Random(uuid.uuid4().int).sample(string.ascii_letters, 3)
    return f"{a}{b},{b}{c}->{a}{c}"


def test_missing_compiler_is_compiler_error(tmp_path):
    """A never-compiled kernel with ``cxx`` pointing nowhere names the compiler (no crash, no hang)."""
    spec = _fresh_spec()
    A = S.from_dense(torch.eye(3, dtype=torch.float64))
    x = torch.ones(3, 2, dtype=torch.float64)
    with sgnn.config(cxx="/nonexistent/g++", cache_dir=tmp_path):
        with pytest.raises(CompilerError, match=r"/nonexistent/g\+\+"):
            sgnn.einsum(spec, A, x)


def test_missing_compiler_from_environment(tmp_path):
    r = _child("""
        import torch, sgnn
        try:
            A = sgnn.SparseTensor.from_dense(torch.eye(3))  # even the format conversion needs the compiler
            sgnn.einsum("ij,jk->ik", A, torch.ones(3, 2))
        except sgnn.CompilerError as e:
            print("CompilerError:", e)
    """, SGNN_CXX="/nonexistent/clang++", SGNN_CACHE_DIR=str(tmp_path))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "CompilerError" in r.stdout and "/nonexistent/clang++" in r.stdout


def test_error_kinds_are_standard_exceptions():
    assert issubclass(UserError, ValueError) and issubclass(NotSupported, NotImplementedError)
    assert issubclass(CompilerError, SgnnError) and issubclass(UserError, SgnnError)
