"""Attention dropout fused into the kernels (issue 11): the keep-mask ``expr.Keep`` is Philox4x32-7
of (seed, i, j, h), recomputed bit-identically by the forward and every derived backward kernel.

References: ``philox`` below re-implements the hash in int64 torch ops (checked against Random123's
known-answer vectors at 10 rounds); the fused attention is compared with an edge-list formulation
that applies that mask after the softmax (PyG's order), forward and gradients."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

import sgnn
from sgnn.engine import autodiff, runtime
from sgnn.engine.expr import compute, indices, keep, pattern, sum_, tensors
from sgnn.engine.lower import lower
from sgnn.engine.verify import verify
from sgnn.errors import InternalError, UserError
from sgnn.harness.data import power_law_edges
from sgnn.layers import GATConv, edgewise
from sgnn.layers.attention import attention, attention_statement, draw_seed

M32 = 0xFFFFFFFF
ROUNDS = 7  # sgnn_runtime.h's PHILOX_ROUNDS


# ---------------------------------------------------------------- the reference hash


def _mulhilo(a: int, b: torch.Tensor):
    """(hi, lo) 32-bit words of the 64-bit product a * b without int64 overflow (16-bit halves)."""
    p1, p2 = a * (b & 0xFFFF), a * (b >> 16)
    t = p1 + ((p2 & 0xFFFF) << 16)
    return (p2 >> 16) + (t >> 32), t & M32


def philox(seed: int, ctr, rounds: int = ROUNDS) -> list[torch.Tensor]:
    """Philox4x32 of the counter words ``ctr`` (4 int64 tensors, low 32 bits used) under the 64-bit key ``seed``."""
    k0, k1 = seed & M32, (seed >> 32) & M32
    c0, c1, c2, c3 = (torch.as_tensor(c, dtype=torch.int64) & M32 for c in ctr)
    for _ in range(rounds):
        h0, l0 = _mulhilo(0xD2511F53, c0)
        h1, l1 = _mulhilo(0xCD9E8D57, c2)
        c0, c1, c2, c3 = h1 ^ c1 ^ k0, l1, h0 ^ c3 ^ k1, l0
        k0, k1 = (k0 + 0x9E3779B9) & M32, (k1 + 0xBB67AE85) & M32
    return [c0, c1, c2, c3]


def keep_ref(seed: int, coords, p: float, dtype=torch.float64) -> torch.Tensor:
    """The mask ``expr.Keep`` defines: 1/(1-p) where word 0 >= round(p 2^32), else 0."""
    coords = list(torch.broadcast_tensors(*[torch.as_tensor(c, dtype=torch.int64) for c in coords]))
    coords += [torch.zeros_like(coords[0])] * (4 - len(coords))
    kept = philox(seed % 2 ** 64, coords)[0] >= round(p * 2 ** 32)
    scale = torch.tensor(1.0 / (1.0 - p) if p < 1 else 0.0, dtype=torch.float64)  # rounded once, to dtype
    return torch.where(kept, scale, torch.zeros((), dtype=torch.float64)).to(dtype)


def test_reference_hash_is_philox():
    """Random123's known answers for Philox4x32-10 (the reference's round function)."""
    kat = [(0, (0, 0, 0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
           (2 ** 64 - 1, (M32,) * 4, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
           (0x299F31D0A4093822, (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
            (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]
    for key, ctr, want in kat:
        assert [int(w) for w in philox(key, [torch.tensor(c) for c in ctr], rounds=10)] == list(want)


# ---------------------------------------------------------------- the mask in kernels

_i, _j, _h = indices("i j h")
_A, _O = tensors("A O")


@pytest.mark.parametrize("seed", [0, 12345, -1, -2 ** 63, 2 ** 62 + 7])
@pytest.mark.parametrize("p", [0.0, 0.1, 0.6, 1.0])
def test_kernel_mask_is_bit_identical_to_the_reference(seed, p):
    n, heads = 23, 5
    s = torch.tensor(seed, dtype=torch.int64)
    for dtype in (torch.float32, torch.float64):
        ones = torch.ones(n, n, heads, dtype=dtype)
        dense = runtime.evaluate(compute((_i, _j, _h), keep("seed", (_i, _j, _h), p) * _O[_i, _j, _h]),
                                 {"O": ones, "seed": s})
        ii, jj, hh = torch.meshgrid(torch.arange(n), torch.arange(n), torch.arange(heads), indexing="ij")
        assert torch.equal(dense, keep_ref(seed, (ii, jj, hh), p, dtype))
    # sampled at a sparse pattern, the mask of stored coordinates only
    ei = power_law_edges(n, 80, torch.Generator().manual_seed(0))
    adj = sgnn.SparseTensor.from_coo(ei[1], ei[0], shape=(n, n)).with_values(None)
    got = runtime.evaluate(compute((_i, _j, _h), pattern(_A[_i, _j]) * keep("seed", (_i, _j, _h), p) * _O[_h]),
                           {"A": adj, "O": torch.ones(heads, dtype=torch.float64), "seed": s})
    rows, cols = _rows_cols(adj)
    want = keep_ref(seed, (rows[:, None], cols[:, None], torch.arange(heads)), p)
    assert torch.equal(got.values.view(-1, heads), want)


def test_keep_fraction_is_one_minus_p():
    n = 400_000
    k = indices("k")[0]
    for p in (0.1, 0.5, 0.6, 0.9):
        m = runtime.evaluate(compute((k,), keep("seed", (k,), p) * _O[k]),
                             {"O": torch.ones(n, dtype=torch.float64), "seed": torch.tensor(7)})
        frac = float((m > 0).double().mean())
        assert abs(frac - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n), (p, frac)
        assert torch.all((m == 0) | (m == 1 / (1 - p)))
        assert abs(float(m.mean()) - 1.0) < 0.02  # inverted dropout keeps the expectation


def test_seed_is_a_runtime_argument():
    """One kernel serves every seed: the seed is a scalar parameter, not part of the source."""
    n = 50
    stmt = compute((_i, _j), keep("seed", (_i, _j), 0.5) * _O[_i, _j])
    ops = {"O": torch.ones(n, n), "seed": torch.tensor(11)}
    plan = runtime.plan_for(stmt, ops)
    a = plan(ops)
    b = plan({**ops, "seed": torch.tensor(2 ** 40 + 3)})
    assert not torch.equal(a, b)
    (kern,) = plan.kernels.recent.values()  # one compile for both seeds
    assert "int64_t seed_seed" in kern.source and str(2 ** 40 + 3) not in kern.source
    no_seed = [q for q in plan.params if q.kind != "seed"]  # verify refuses a mask without its seed parameter
    with pytest.raises(InternalError, match="seed_seed"):
        verify(lower(plan.sched, kern.tile, no_seed), no_seed)
    with pytest.raises(UserError, match="seed"):
        plan({**ops, "seed": torch.tensor(1.5)})
    with pytest.raises(UserError, match="keep"):
        keep("seed", (_i, _j), 1.5)
    with pytest.raises(UserError, match="no extent"):  # an index only the mask carries has no size
        compute((_i, _j), keep("seed", (_i, _j), 0.5) * _O[_i])


# ---------------------------------------------------------------- fused attention vs the reference


def _rows_cols(adj):
    pos, crd = adj.pos[1].long(), adj.crd[1].long()
    return torch.repeat_interleave(torch.arange(adj.shape[0]), pos.diff()), crd


def reference(adj, a_src, a_dst, x, slope, el, bias, p, seed):
    """PyG's order of operations on an edge list: logits, edge softmax, dropout of alpha, scatter."""
    rows, cols = _rows_cols(adj)
    n_dst, heads = adj.shape[0], x.shape[1]
    s = a_src[cols] + (a_dst[rows] if a_dst is not None else 0) + (el if el is not None else 0)
    s = torch.nn.functional.leaky_relu(s, slope)
    m = torch.full((n_dst, heads), -math.inf, dtype=s.dtype).scatter_reduce(
        0, rows[:, None].expand_as(s), s, "amax", include_self=True)
    w = torch.exp(s - m[rows])
    z = torch.zeros(n_dst, heads, dtype=s.dtype).index_add(0, rows, w)
    alpha = w / z[rows]
    if p > 0:
        alpha = alpha * keep_ref(seed, (rows[:, None], cols[:, None], torch.arange(heads)), p, s.dtype)
    out = torch.zeros(n_dst, heads, x.shape[2], dtype=s.dtype).index_add(0, rows, alpha[..., None] * x[cols])
    return out + bias.view(heads, -1) if bias is not None else out


def graph(n: int, m: int, gen, empty=(2,), repeat: bool = False):
    """A power-law graph with rows ``empty`` emptied (and a repeated edge with ``repeat``)."""
    ei = power_law_edges(n, m, gen)
    ei = ei[:, ~torch.isin(ei[1], torch.tensor(empty))]
    if repeat and ei.shape[1]:
        ei = torch.cat([ei, ei[:, :1]], 1)
    return sgnn.SparseTensor.from_coo(ei[1], ei[0], shape=(n, n), sum_duplicates=not repeat).with_values(None)


def operands(adj, heads, ch, dst, edge, bias, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = adj.shape[0]
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).to(dtype)  # noqa: E731
    return [r(n, heads), r(n, heads) if dst else None, r(n, heads, ch), r(adj.nnz, heads) if edge else None,
            r(heads, ch) if bias else None]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(3, 40), density=st.floats(0.5, 4), heads=st.integers(1, 4), ch=st.sampled_from([1, 3, 8, 17]),
       p=st.sampled_from([0.1, 0.5, 0.6, 0.95]), seed=st.integers(-2 ** 63, 2 ** 63 - 1),
       opts=st.tuples(st.booleans(), st.booleans(), st.booleans()), f64=st.booleans(), repeat=st.booleans())
def test_fused_dropout_matches_reference(n, density, heads, ch, p, seed, opts, f64, repeat):
    dtype = torch.float64 if f64 else torch.float32
    adj = graph(n, min(int(n * density), n * (n - 1)), torch.Generator().manual_seed(n), repeat=repeat)
    if adj.nnz == 0:
        return
    dst, edge, bias = opts
    args = operands(adj, heads, ch, dst, edge, bias, dtype)
    got = attention(adj, args[0], args[1], args[2], 0.2, args[3], args[4], dropout=p, seed=seed)
    want = reference(adj, *[a.double() if a is not None else None for a in args[:2]], args[2].double(), 0.2,
                     args[3].double() if edge else None, args[4].double() if bias else None, p, seed)
    tol = dict(rtol=1e-10, atol=1e-12) if f64 else dict(rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got.double(), want, **tol)
    assert torch.equal(got[2], torch.zeros_like(got[2]) + (args[4] if bias else 0))  # an empty row: bias


def test_seed_determines_the_output():
    adj = graph(60, 300, torch.Generator().manual_seed(1))
    a_src, a_dst, x, _, b = operands(adj, 4, 8, True, False, True, torch.float32)
    run = lambda **kw: attention(adj, a_src, a_dst, x, 0.2, None, b, **kw)  # noqa: E731
    assert torch.equal(run(dropout=0.5, seed=3), run(dropout=0.5, seed=3))
    assert not torch.equal(run(dropout=0.5, seed=3), run(dropout=0.5, seed=4))
    assert torch.equal(run(dropout=0.0, seed=3), run())
    torch.manual_seed(5)
    a = run(dropout=0.5)
    torch.manual_seed(5)
    assert torch.equal(a, run(dropout=0.5, seed=draw_seed()))  # drawn from torch's default generator
    assert not torch.equal(a, run(dropout=0.5))  # the next draw: another mask
    torch.testing.assert_close(run(dropout=1.0, seed=3), b.expand_as(a))  # everything dropped: bias only
    with pytest.raises(UserError, match="dropout"):
        run(dropout=-0.1)
    with pytest.raises(UserError, match="seed"):
        run(dropout=0.5, seed=1.5)


def test_p_zero_keep_is_exactly_no_dropout():
    """A mask of p = 0 multiplies every weight by exactly 1: bit-identical to the plain statement."""
    adj = graph(30, 120, torch.Generator().manual_seed(2))
    a_src, a_dst, x, _, _ = operands(adj, 2, 8, True, False, False, torch.float32)
    plain = attention_statement(True, False, False, 0.2)
    soft, xs = plain.expr.body.a, plain.expr.body.b
    masked = compute(plain.idx, sum_("j", soft * keep("seed", ("i", "j", "h"), 0.0) * xs))
    ops = {"A": adj, "as_": a_src, "ad": a_dst, "X": x}
    assert torch.equal(runtime.evaluate(masked, {**ops, "seed": torch.tensor(9)}), runtime.evaluate(plain, ops))


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("edge", [False, True])
def test_backward_has_no_per_edge_intermediate(edge):
    """The derived backward with dropout: every intermediate is per node (rows or sources), none per
    edge; the mask is recomputed inside each gradient statement; only the edge logits' own gradient
    (sampled at the pattern) is E×H."""
    stmt = attention_statement(True, edge, True, 0.2, 0.6)
    targets = {"as_": False, "ad": False, "X": False, "b": False, **({"ae": True} if edge else {})}
    b = autodiff.backward_of(stmt, targets)
    for name, st in b.pre:
        assert not {"i", "j"} <= set(st.idx), f"{name} := {st} is per edge"
    assert any("keep_seed" in str(st) for _, st in b.pre)  # the logits' gradients: sum_c X keep G... per node
    assert "keep_seed" not in str(b.stmts["b"])  # the bias is added after the dropped sum
    for name in ("X",) + (("ae",) if edge else ()):
        assert "keep_seed" in str(b.stmts[name])  # the mask enters dX = sum_i G alpha keep (and d ae)
    assert "seed" in b.stmts["X"].inputs


@pytest.mark.parametrize("dst,edge,bias", [(True, False, True), (False, True, False), (True, True, True)])
@pytest.mark.parametrize("repeat", [False, True])
def test_gradcheck_with_dropout(dst, edge, bias, repeat):
    adj = graph(10, 30, torch.Generator().manual_seed(0), empty=(2, 4), repeat=repeat)
    args = operands(adj, 3, 2, dst, edge, bias, torch.float64)
    present = [k for k, a in enumerate(args) if a is not None]
    leaves = tuple(args[k].requires_grad_(True) for k in present)

    def fn(*xs):
        full = list(args)
        for k, v in zip(present, xs):
            full[k] = v
        return attention(adj, full[0], full[1], full[2], 0.2, full[3], full[4], dropout=0.4, seed=77)
    assert torch.autograd.gradcheck(fn, leaves)


@pytest.mark.parametrize("f64", [True, False])
def test_gradients_match_the_reference(f64):
    dtype = torch.float64 if f64 else torch.float32
    adj = graph(200, 1500, torch.Generator().manual_seed(3))
    args = operands(adj, 4, 8, True, True, True, dtype)
    grads = []
    for fn in (attention, reference):
        leaves = [a.detach().double().requires_grad_(True) if fn is reference else a.detach().requires_grad_(True)
                  for a in args]
        out = fn(adj, leaves[0], leaves[1], leaves[2], 0.2, leaves[3], leaves[4], 0.6, 12345)
        w = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(out.dtype)
        (out * w).sum().backward()
        grads.append([out.detach().double()] + [t.grad.double() for t in leaves])
    tol = dict(rtol=1e-9, atol=1e-10) if f64 else dict(rtol=2e-4, atol=2e-5)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, **tol)


# ---------------------------------------------------------------- GATConv in train()


def _mask_dropout(seed_of):
    """A stand-in for torch.nn.functional in edgewise: dropout applies the Philox mask of the edges."""
    class F:
        leaky_relu = staticmethod(torch.nn.functional.leaky_relu)

        @staticmethod
        def dropout(alpha, p, training):
            rows, cols = seed_of["rc"]
            return alpha * keep_ref(seed_of["seed"], (rows[:, None], cols[:, None], torch.arange(alpha.shape[1])),
                                    p, alpha.dtype) if training else alpha
    return F


@pytest.mark.parametrize("heads,concat,edge_dim", [(4, True, None), (2, True, 3), (3, False, None)])
def test_gat_train_dropout_fused_matches_the_masked_edgewise(monkeypatch, heads, concat, edge_dim):
    g = torch.Generator().manual_seed(0)
    n = 50
    ei = power_law_edges(n, 300, g)
    ea = torch.randn(ei.shape[1], edge_dim, generator=g, dtype=torch.float64) if edge_dim else None
    x = torch.randn(n, 12, generator=g, dtype=torch.float64)
    torch.manual_seed(0)
    conv = GATConv(12, 5, heads=heads, concat=concat, edge_dim=edge_dim, dropout=0.6).double().train()
    torch.manual_seed(42)
    seed = int(draw_seed())
    # the reference: PyG's edge-wise formulation, its dropout replaced by the same mask
    loops = torch.arange(n)
    dst, src = torch.cat([ei[1], loops]), torch.cat([ei[0], loops])
    order = torch.argsort(dst * n + src)
    state = {"seed": seed, "rc": (dst[order], src[order])}
    runs = []
    for threshold, f in ((1 << 60, _mask_dropout(state)), (0, torch.nn.functional)):  # edge-wise, fused
        monkeypatch.setattr(edgewise, "FUSED_MIN_BYTES", threshold)
        monkeypatch.setattr(edgewise, "F", f)
        conv.zero_grad()
        xx = x.clone().requires_grad_()
        torch.manual_seed(42)
        out = conv(xx, ei, ea) if edge_dim else conv(xx, ei)
        (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)).sum().backward()
        runs.append([out.detach(), xx.grad] + [p.grad.clone() for p in conv.parameters()])
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    conv.eval()  # eval() ignores dropout: equal to a dropout-free layer
    plain = GATConv(12, 5, heads=heads, concat=concat, edge_dim=edge_dim).double()
    plain.load_state_dict(conv.state_dict())
    with torch.no_grad():
        args = (x, ei, ea) if edge_dim else (x, ei)
        torch.testing.assert_close(conv(*args), plain.eval()(*args))


def test_gat_train_dropout_is_random_and_reproducible(monkeypatch):
    monkeypatch.setattr(edgewise, "FUSED_MIN_BYTES", 0)
    g = torch.Generator().manual_seed(0)
    ei, x = power_law_edges(40, 200, g), torch.randn(40, 8, generator=g)
    conv = GATConv(8, 4, heads=2, dropout=0.5).train()
    torch.manual_seed(1)
    a = conv(x, ei)
    b = conv(x, ei)
    torch.manual_seed(1)
    assert torch.equal(a, conv(x, ei)) and not torch.equal(a, b)


def test_compiled_gat_fused_dropout_follows_the_forward_mask(monkeypatch):
    """torch.compile: conv_backward recomputes with the forward's RNG state, so the same seed."""
    monkeypatch.setattr(edgewise, "FUSED_MIN_BYTES", 0)
    g = torch.Generator().manual_seed(0)
    ei, x0 = power_law_edges(40, 200, g), torch.randn(40, 8, generator=g)
    conv = GATConv(8, 4, heads=2, dropout=0.5).train()
    compiled = torch.compile(conv, fullgraph=True)
    res = []
    for fn in (compiled, conv):
        x = x0.clone().requires_grad_(True)
        conv.zero_grad()
        torch.manual_seed(3)
        out = fn(x, ei)
        (out * torch.linspace(-1, 1, out.shape[1])).sum().backward()
        res.append([out.detach(), x.grad] + [p.grad.clone() for p in conv.parameters()])
    for a, b in zip(*res):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
