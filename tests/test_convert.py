"""csrc/convert.cpp through sgnn.engine.convert, against scipy.sparse and a stable numpy reference.

Values are integer-valued floats wherever sums are compared, so any summation order is exact.
"""
from __future__ import annotations


import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sgnn.engine import convert
from sgnn.errors import UserError

VALUE_DTYPES = [torch.float32, torch.float64, None]
INDEX_DTYPES = [torch.int32, torch.int64]
# 0-sized dims; one entry; an awkward size; more than 1024 rows (two-pass scatter); few long rows
SHAPES = [(0, 0), (0, 5), (5, 0), (1, 1), (33, 127), (3000, 40), (4, 5000)]


from thread_helpers import num_threads  # noqa: E402


def random_coo(shape, nnz, *, seed=0, dup=True, vdtype=torch.float32, power_law=False):
    """Random entries (integer-valued values); with dup=False no coordinate repeats."""
    g = torch.Generator().manual_seed(seed)
    m, n = shape
    if m == 0 or n == 0:
        nnz = 0
    if power_law and nnz:
        w = 1.0 / torch.arange(1, m + 1, dtype=torch.float64) ** 1.2
        w[max(1, m * 9 // 10):] = 0  # a tenth of the rows stay empty
        row = torch.multinomial(w, nnz, replacement=True, generator=g)
        row = torch.randperm(m, generator=g)[row]  # heavy rows anywhere, not just at the top
    else:
        row = torch.randint(0, max(m, 1), (nnz,), generator=g)
    col = torch.randint(0, max(n, 1), (nnz,), generator=g)
    if not dup and nnz:
        key = torch.unique(row * n + col)
        key = key[torch.randperm(key.numel(), generator=g)]
        row, col = key // n, key % n
    val = None
    if vdtype is not None:
        val = torch.randint(-8, 9, (row.numel(),), generator=g).to(vdtype)
    return row, col, val


def ref_csr(row, col, val, shape, sum_duplicates):
    """Stable numpy reference: entries ordered by (row, col), ties in input order. Merging the
    repeats of a pattern-only input gives their counts as float32 values."""
    r, c = row.numpy().astype(np.int64), col.numpy().astype(np.int64)
    order = np.lexsort((c, r))  # stable
    r, c = r[order], c[order]
    v = val.numpy()[order] if val is not None else None
    if sum_duplicates and r.size:
        first = np.ones(r.size, bool)
        first[1:] = (r[1:] != r[:-1]) | (c[1:] != c[:-1])
        starts = np.flatnonzero(first)
        if v is None and starts.size < r.size:
            v = np.ones(r.size, np.float32)
        if v is not None:
            v = np.add.reduceat(v, starts)
        r, c = r[starts], c[starts]
    pos = np.zeros(shape[0] + 1, np.int64)
    np.cumsum(np.bincount(r, minlength=shape[0]), out=pos[1:])
    return pos, c, v


def scipy_csr(row, col, val, shape):
    data = val.numpy() if val is not None else np.ones(row.numel())
    a = sp.coo_matrix((data, (row.numpy(), col.numpy())), shape=shape).tocsr()
    a.sum_duplicates()
    a.sort_indices()
    return a


def assert_csr(got, pos, crd, val, idt=None, vdtype=None):
    p, c, v = got
    if idt is not None:
        assert p.dtype == idt and c.dtype == idt
    assert p.is_contiguous() and c.is_contiguous()
    np.testing.assert_array_equal(p.numpy(), np.asarray(pos), err_msg="pos")
    np.testing.assert_array_equal(c.numpy(), np.asarray(crd), err_msg="crd")
    if val is None:
        assert v is None
    else:
        assert v is not None and v.dtype == (vdtype or torch.float32) and v.is_contiguous()
        np.testing.assert_array_equal(v.numpy(), np.asarray(val), err_msg="values")


# ------------------------------------------------------------------ coo_to_csr: tables
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("vdtype", VALUE_DTYPES, ids=str)
@pytest.mark.parametrize("idt", INDEX_DTYPES, ids=str)
def test_coo_to_csr_sum_matches_scipy(shape, vdtype, idt):
    row, col, val = random_coo(shape, 4 * (shape[0] + shape[1]), seed=1, vdtype=vdtype)
    got = convert.coo_to_csr(row, col, val, shape, index_dtype=idt)
    a = scipy_csr(row, col, val, shape)
    counts = a.data if a.nnz < row.numel() else None  # pattern-only: merged repeats are counted
    assert_csr(got, a.indptr, a.indices, a.data if vdtype is not None else counts, idt, vdtype)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("vdtype", VALUE_DTYPES, ids=str)
@pytest.mark.parametrize("idt", INDEX_DTYPES, ids=str)
def test_coo_to_csr_keeps_duplicates_in_input_order(shape, vdtype, idt):
    row, col, _ = random_coo(shape, 4 * (shape[0] + shape[1]), seed=2)
    val = torch.arange(row.numel(), dtype=vdtype) if vdtype is not None else None  # distinct: order shows
    got = convert.coo_to_csr(row, col, val, shape, sum_duplicates=False, index_dtype=idt)
    assert_csr(got, *ref_csr(row, col, val, shape, False), idt, vdtype)


@pytest.mark.parametrize("sum_duplicates", [True, False])
@pytest.mark.parametrize("vdtype", VALUE_DTYPES, ids=str)
def test_coo_to_csr_without_duplicates(sum_duplicates, vdtype):
    shape = (50, 60)
    row, col, val = random_coo(shape, 400, seed=3, dup=False, vdtype=vdtype)
    got = convert.coo_to_csr(row, col, val, shape, sum_duplicates=sum_duplicates)
    a = scipy_csr(row, col, val, shape)
    assert got[1].numel() == row.numel()
    assert_csr(got, a.indptr, a.indices, a.data if vdtype is not None else None, torch.int32, vdtype)


def test_coo_to_csr_single_nonzero():
    p, c, v = convert.coo_to_csr(torch.tensor([2]), torch.tensor([3]), torch.tensor([7.0]), (4, 5))
    assert p.tolist() == [0, 0, 0, 1, 1] and c.tolist() == [3] and v.tolist() == [7.0]


def test_coo_to_csr_empty_rows_and_all_duplicates():
    row, col = torch.tensor([3, 3, 3, 0]), torch.tensor([1, 1, 1, 4])
    val = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    p, c, v = convert.coo_to_csr(row, col, val, (6, 5))
    assert p.tolist() == [0, 1, 1, 1, 2, 2, 2] and c.tolist() == [4, 1] and v.tolist() == [4.0, 6.0]
    p, c, v = convert.coo_to_csr(row, col, None, (6, 5))  # pattern-only: repeats become counts
    assert p.tolist() == [0, 1, 1, 1, 2, 2, 2] and c.tolist() == [4, 1] and v.tolist() == [1.0, 3.0]
    assert v.dtype == torch.float32
    p, c, v = convert.coo_to_csr(row[2:], col[2:], None, (6, 5))  # no repeats: still pattern-only
    assert c.tolist() == [4, 1] and v is None


@pytest.mark.parametrize("vdtype", [torch.float32, None], ids=str)
@pytest.mark.parametrize("shape", [(200, 3000), (5000, 5000)], ids=str)
def test_coo_to_csr_power_law_rows(shape, vdtype):
    """Rows from empty to thousands of entries: insertion sort, merge sort, both scatter paths."""
    row, col, val = random_coo(shape, 100_000, seed=4, vdtype=vdtype, power_law=True)
    lengths = torch.bincount(row, minlength=shape[0])
    assert int(lengths.max()) > 1000 and int((lengths == 0).sum()) > 0
    for sum_duplicates in (True, False):
        got = convert.coo_to_csr(row, col, val, shape, sum_duplicates=sum_duplicates)
        assert_csr(got, *ref_csr(row, col, val, shape, sum_duplicates), torch.int32, vdtype)


def test_coo_to_csr_sorted_input_is_unchanged():
    a = sp.random(300, 400, density=0.05, format="csr", random_state=5, dtype=np.float64)
    coo = a.tocoo()
    got = convert.coo_to_csr(torch.from_numpy(coo.row), torch.from_numpy(coo.col),
                             torch.from_numpy(coo.data), a.shape)
    assert_csr(got, a.indptr, a.indices, a.data, torch.int32, torch.float64)


def test_coo_to_csr_sums_in_input_order():
    """Float sums are not associative: the result must be the left-to-right sum, for any thread count."""
    row = torch.zeros(40, dtype=torch.int64)
    col = torch.zeros(40, dtype=torch.int64)
    val = torch.tensor([1e8, 1.0, -1e8, 1.0] * 10, dtype=torch.float32)
    expected = torch.tensor(0.0, dtype=torch.float32)
    for x in val:
        expected = expected + x
    _, c, v = convert.coo_to_csr(row, col, val, (1, 1))
    assert c.tolist() == [0] and v.item() == expected.item()


def test_coo_to_csr_thread_count_invariant():
    shape = (20_000, 20_000)
    row, col, _ = random_coo(shape, 300_000, seed=6, power_law=True)
    val = torch.rand(row.numel(), generator=torch.Generator().manual_seed(6))  # non-integer: order matters
    results = []
    for n in (1, 2, 4):
        with num_threads(n):
            results.append(convert.coo_to_csr(row, col, val, shape))
    for r in results[1:]:
        for a, b in zip(results[0], r):
            assert torch.equal(a, b)
    pos, crd, _ = ref_csr(row, col, val, shape, True)
    assert_csr(results[0][:2] + (None,), pos, crd, None)


def test_coo_to_csr_index_dtype():
    row, col = torch.tensor([0, 1], dtype=torch.int64), torch.tensor([1, 0], dtype=torch.int64)
    assert convert.coo_to_csr(row, col, None, (2, 2))[0].dtype == torch.int32  # fits: int32
    p, c, _ = convert.coo_to_csr(row, col, None, (2, 2**31))  # a dimension too big for int32
    assert p.dtype == c.dtype == torch.int64 and c.tolist() == [1, 0]
    row8 = torch.tensor([1, 0], dtype=torch.uint8)
    assert convert.coo_to_csr(row8, row8, None, (2, 2))[1].tolist() == [0, 1]
    with pytest.raises(UserError, match=r"index_dtype int64 for shape \(2, 2147483648\)"):
        convert.coo_to_csr(row, col, None, (2, 2**31), index_dtype=torch.int32)


def test_coo_to_csr_accepts_non_contiguous_and_does_not_mutate():
    row, col, val = random_coo((40, 40), 300, seed=7)
    both = torch.stack([row, col], 1)  # row and col become strided views
    keep = (both.clone(), val.clone())
    got = convert.coo_to_csr(both[:, 0], both[:, 1], val, (40, 40))
    assert_csr(got, *ref_csr(row, col, val, (40, 40), True), torch.int32, torch.float32)
    assert torch.equal(both, keep[0]) and torch.equal(val, keep[1])


# ------------------------------------------------------------------ csr_transpose, sort_rows, sum_duplicates
def raw_csr(shape, nnz, *, seed, vdtype=torch.float32, idt=torch.int32, sort=False, power_law=False):
    """A CSR whose rows are unsorted with duplicates (or sorted with duplicates when sort=True)."""
    row, col, val = random_coo(shape, nnz, seed=seed, vdtype=vdtype, power_law=power_law)
    pos, crd, val = convert.coo_to_csr(row, col, val, shape, sum_duplicates=False, index_dtype=idt)
    if not sort and crd.numel():
        # shuffle inside each row
        g = torch.Generator().manual_seed(seed)
        rows = torch.repeat_interleave(torch.arange(shape[0]), (pos[1:] - pos[:-1]).long())
        perm = torch.argsort(rows.double() + torch.rand(rows.numel(), generator=g, dtype=torch.float64) * 0.5)
        crd = crd[perm]
        val = val[perm] if val is not None else None
    return pos, crd, val


def rows_of(pos):
    return np.repeat(np.arange(pos.numel() - 1), (pos[1:] - pos[:-1]).numpy())


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("vdtype", VALUE_DTYPES, ids=str)
@pytest.mark.parametrize("idt", INDEX_DTYPES, ids=str)
def test_csr_transpose(shape, vdtype, idt):
    pos, crd, val = raw_csr(shape, 3 * (shape[0] + shape[1]), seed=8, vdtype=vdtype, idt=idt)
    got = convert.csr_transpose(pos, crd, val, shape)
    # entries of the transpose: (crd, row), stable in the input's storage order
    tpos, tcrd, tval = ref_csr(crd, torch.from_numpy(rows_of(pos)), val, (shape[1], shape[0]), False)
    assert_csr(got, tpos, tcrd, tval, idt, vdtype)
    if vdtype is not None:
        a = sp.csr_matrix((val.numpy(), crd.numpy(), pos.numpy()), shape=shape).tocsc()
        a.sum_duplicates()
        b = convert.sum_duplicates(*got, (shape[1], shape[0]))
        assert_csr(b, a.indptr, a.indices, a.data, idt, vdtype)


def test_csr_transpose_twice_is_identity():
    shape = (3000, 2500)  # both directions take the two-pass scatter
    pos, crd, val = raw_csr(shape, 200_000, seed=9, sort=True, power_law=True)
    once = convert.csr_transpose(pos, crd, val, shape)
    twice = convert.csr_transpose(*once, (shape[1], shape[0]))
    assert_csr(twice, pos, crd, val, torch.int32, torch.float32)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("vdtype", VALUE_DTYPES, ids=str)
@pytest.mark.parametrize("idt", INDEX_DTYPES, ids=str)
def test_sort_rows_then_sum_duplicates(shape, vdtype, idt):
    pos, crd, val = raw_csr(shape, 4 * (shape[0] + shape[1]), seed=10, vdtype=vdtype, idt=idt)
    keep = (pos.clone(), crd.clone(), None if val is None else val.clone())
    sorted_ = convert.sort_rows(pos, crd, val, shape)
    rows = torch.from_numpy(rows_of(pos))
    assert_csr(sorted_, *ref_csr(rows, crd, val, shape, False), idt, vdtype)
    merged = convert.sum_duplicates(*sorted_, shape)
    assert_csr(merged, *ref_csr(rows, crd, val, shape, True), idt, vdtype)
    assert torch.equal(pos, keep[0]) and torch.equal(crd, keep[1])  # inputs untouched
    assert val is None or torch.equal(val, keep[2])


def test_sort_rows_long_rows_stable():
    shape = (3, 10_000)
    g = torch.Generator().manual_seed(11)
    crd = torch.randint(0, 50, (30_000,), generator=g)  # long rows full of repeats
    pos = torch.tensor([0, 20_000, 20_000, 30_000])
    val = torch.arange(30_000, dtype=torch.float64)
    got = convert.sort_rows(pos, crd, val, shape)
    rows = torch.from_numpy(rows_of(pos))
    assert_csr(got, *ref_csr(rows, crd, val, shape, False), torch.int64, torch.float64)


def test_sum_duplicates_only_merges_adjacent():
    pos, crd, val = torch.tensor([0, 3]), torch.tensor([1, 0, 1]), torch.tensor([1.0, 2.0, 3.0])
    p, c, v = convert.sum_duplicates(pos, crd, val, (1, 2))
    assert p.tolist() == [0, 3] and c.tolist() == [1, 0, 1] and v.tolist() == [1.0, 2.0, 3.0]


# ------------------------------------------------------------------ bad input
BAD_COO = [
    ({"row": [0, 7]}, r"coo_to_csr: expected row indices in \[0, 5\) \(got max 7\)"),
    ({"row": [-1, 0]}, r"coo_to_csr: expected row indices in \[0, 5\) \(got min -1\)"),
    ({"col": [0, 6]}, r"coo_to_csr: expected column indices in \[0, 6\) \(got max 6\)"),
    ({"row": [0]}, r"expected row and column indices of one length \(got 1 and 2\)"),
    ({"row": [[0, 1]]}, r"expected row indices to be one-dimensional \(got shape \(1, 2\)\)"),
    ({"row": [0.0, 1.0]}, r"expected integer row indices \(got torch.float32\)"),
    ({"values": torch.tensor([1, 2])}, r"expected values of dtype float32 or float64 \(got torch.int64\)"),
    ({"values": torch.ones(3)}, r"expected 2 values, one per stored entry \(got 3\)"),
    ({"shape": (5, -1)}, r"expected non-negative dimensions \(got \(5, -1\)\)"),
    ({"shape": (5,)}, r"expected a shape of two integers"),
    ({"row": np.array([0, 1])}, r"expected row indices to be a torch.Tensor \(got ndarray\)"),
]


@pytest.mark.parametrize("change,match", BAD_COO, ids=lambda x: str(x)[:40])
def test_coo_to_csr_bad_input(change, match):
    args = {"row": [0, 1], "col": [0, 1], "values": None, "shape": (5, 6)} | change
    for k in ("row", "col"):
        if isinstance(args[k], list):
            args[k] = torch.tensor(args[k])
    with pytest.raises(UserError, match=match):
        convert.coo_to_csr(args["row"], args["col"], args["values"], args["shape"])


BAD_CSR = [
    ({"pos": [0, 1]}, r"expected pos of length rows \+ 1 = 3 \(got 2\)"),
    ({"pos": [1, 1, 2]}, r"expected pos\[0\] == 0 and pos\[-1\] == len\(crd\) == 2 \(got 1 and 2\)"),
    ({"pos": [0, 1, 3]}, r"pos\[-1\] == len\(crd\) == 2 \(got 0 and 3\)"),
    ({"pos": [0, 3, 2], "crd": [0, 1]}, r"expected non-decreasing pos \(got pos\[1\] = 3 > pos\[2\] = 2\)"),
    ({"crd": [0, 4]}, r"expected column coordinates in \[0, 4\) \(got max 4\)"),
    ({"crd": [-3, 0]}, r"expected column coordinates in \[0, 4\) \(got min -3\)"),
    ({"crd": torch.tensor([0, 1], dtype=torch.int32)},
     r"one index dtype \(got torch.int64 and torch.int32\)"),
    ({"pos": torch.tensor([0.0, 1.0, 2.0])}, r"expected pos of dtype int32 or int64 \(got torch.float32\)"),
    ({"values": torch.ones(2, dtype=torch.float16)}, r"float32 or float64 \(got torch.float16\)"),
]


@pytest.mark.parametrize("fn", [convert.csr_transpose, convert.sort_rows, convert.sum_duplicates],
                         ids=lambda f: f.__name__)
@pytest.mark.parametrize("change,match", BAD_CSR, ids=lambda x: str(x)[:40])
def test_csr_bad_input(fn, change, match):
    args = {"pos": [0, 1, 2], "crd": [0, 3], "values": None, "shape": (2, 4)} | change
    for k in ("pos", "crd"):
        if isinstance(args[k], list):
            args[k] = torch.tensor(args[k])
    with pytest.raises(UserError, match=f"{fn.__name__}: .*{match}"):
        fn(args["pos"], args["crd"], args["values"], args["shape"])


def test_native_symbols():
    """Every (op, index, value) combination the wrapper can ask for is exported with its ctypes ABI."""
    for op, (argtypes, restype) in convert._ABI.items():
        for idt in INDEX_DTYPES:
            for vdt in VALUE_DTYPES:
                fn = convert._native(op, idt, vdt)
                assert tuple(fn.argtypes) == tuple(argtypes) and fn.restype == restype


# ------------------------------------------------------------------ properties
@st.composite
def coo_cases(draw):
    m = draw(st.integers(0, 40))
    n = draw(st.integers(0, 40))
    k = draw(st.integers(0, 150)) if m and n else 0
    row = draw(st.lists(st.integers(0, max(m - 1, 0)), min_size=k, max_size=k))
    col = draw(st.lists(st.integers(0, max(n - 1, 0)), min_size=k, max_size=k))
    vdtype = draw(st.sampled_from(VALUE_DTYPES))
    val = None if vdtype is None else torch.tensor(draw(st.lists(st.integers(-5, 5), min_size=k, max_size=k)),
                                                    dtype=vdtype)
    idt = draw(st.sampled_from(INDEX_DTYPES))
    src = draw(st.sampled_from(INDEX_DTYPES))  # input index dtype, independent of the output's
    return torch.tensor(row, dtype=src), torch.tensor(col, dtype=src), val, (m, n), idt


@settings(deadline=None, max_examples=150)
@given(coo_cases(), st.booleans())
def test_property_coo_to_csr(case, sum_duplicates):
    row, col, val, shape, idt = case
    got = convert.coo_to_csr(row, col, val, shape, sum_duplicates=sum_duplicates, index_dtype=idt)
    assert_csr(got, *ref_csr(row, col, val, shape, sum_duplicates), idt, None if val is None else val.dtype)
    if sum_duplicates:
        a = scipy_csr(row, col, val, shape)
        np.testing.assert_array_equal(got[0].numpy(), a.indptr)
        np.testing.assert_array_equal(got[1].numpy(), a.indices)
        if val is not None:
            np.testing.assert_array_equal(got[2].numpy(), a.data.astype(got[2].numpy().dtype))


@settings(deadline=None, max_examples=100)
@given(coo_cases())
def test_property_csr_round_trips(case):
    """transpose twice is the identity; sort_rows + sum_duplicates equals coo_to_csr with merging."""
    row, col, val, shape, idt = case
    raw = convert.coo_to_csr(row, col, val, shape, sum_duplicates=False, index_dtype=idt)
    t = convert.csr_transpose(*raw, shape)
    assert t[0].numel() == shape[1] + 1
    back = convert.csr_transpose(*t, (shape[1], shape[0]))
    for a, b in zip(raw, back):
        assert (a is None and b is None) or torch.equal(a, b)
    merged = convert.sum_duplicates(*convert.sort_rows(*raw, shape), shape)
    direct = convert.coo_to_csr(row, col, val, shape, index_dtype=idt)
    for a, b in zip(merged, direct):
        assert (a is None and b is None) or torch.equal(a, b)
