"""Shared helpers of the layer tests: ``assert_layer`` (PyG parity plus invariances) and graphs.

``assert_layer`` follows PyG's ``testing.assert_module``: one call loads the PyG layer's weights into
the sgnn layer and checks every property a drop-in layer must have. Each failure names its check.
"""
from __future__ import annotations

import copy
import itertools

import pytest
import torch

import sgnn

RTOL = 1e-5  # float32: relative to the largest magnitude of the reference output
GRAD_RTOL = 5e-3  # x.grad at the hub graph's 10,000-edge node cancels heavily; in float32 sgnn's is off by
#                   up to ~1e-3 of the largest gradient vs float64 (PyG's by ~1e-5): same math, other
#                   rounding (the dense torch product in sgnn's formulation gives the same 5e-4)


# ------------------------------------------------------------------ comparisons
def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (0 when both are empty or all zero)."""
    if b.numel() == 0:
        return 0.0
    scale = float(b.abs().max())
    diff = float((a - b).abs().max())
    return diff / scale if scale > 0 else diff


def assert_close(out, ref, what: str, rtol: float = RTOL) -> None:
    assert isinstance(out, torch.Tensor), f"{what}: expected a Tensor (got {type(out).__name__})"
    assert out.shape == ref.shape, f"{what}: expected shape {tuple(ref.shape)} (got {tuple(out.shape)})"
    assert out.dtype == ref.dtype, f"{what}: expected dtype {ref.dtype} (got {out.dtype})"
    assert torch.equal(out.isnan(), ref.isnan()), f"{what}: NaNs differ from the reference"
    err = rel_error(out.nan_to_num(), ref.nan_to_num())
    assert err <= rtol, f"{what}: relative error {err:.3g} > {rtol:g}"


# ------------------------------------------------------------------ inputs
def dense(x):
    """A dense copy of node features given dense, torch sparse, or as a (src, dst) pair."""
    if isinstance(x, (tuple, list)):
        return type(x)(dense(t) for t in x)
    if isinstance(x, torch.Tensor) and x.layout != torch.strided:
        return x.to_dense()
    return x


def sizes(x, kwargs) -> tuple[int, int]:
    """(num_src, num_dst) as the layers infer them."""
    if isinstance(x, (tuple, list)):
        n_src = x[0].shape[0]
        n_dst = x[1].shape[0] if x[1] is not None else n_src
    else:
        n_src = n_dst = x.shape[0]
    if kwargs.get("size") is not None:
        n_dst = kwargs["size"][1]
    return n_src, n_dst


def is_simple(edge_index: torch.Tensor) -> bool:
    """No self loops and no duplicate edges: sparse adjacencies then mean the same as edge_index."""
    if edge_index.numel() == 0:
        return True
    src, dst = edge_index[0].long(), edge_index[1].long()
    if bool((src == dst).any()):
        return False
    key = src * (int(dst.max()) + 1) + dst
    return torch.unique(key).numel() == key.numel()


def adj_t(edge_index, n_src: int, n_dst: int, values=None, layout=torch.sparse_csr) -> torch.Tensor:
    """The torch sparse adjacency ``adj_t[target, source]``."""
    if values is None:
        values = torch.ones(edge_index.size(1))
    a = torch.sparse_coo_tensor(edge_index.flip(0), values, (n_dst, n_src)).coalesce()
    if layout == torch.sparse_csc:
        return a.to_sparse_csc()
    return a.to_sparse_csr() if layout == torch.sparse_csr else a


def sgnn_adj(edge_index, n_src: int, n_dst: int, values=None) -> sgnn.SparseTensor:
    if n_src == n_dst:
        return sgnn.SparseTensor.from_edge_index(edge_index, num_nodes=n_src, values=values,
                                                 sum_duplicates=False)
    return sgnn.SparseTensor.from_coo(edge_index[1], edge_index[0], values, (n_dst, n_src),
                                      sum_duplicates=False)


from thread_helpers import num_threads  # noqa: E402


def randomize_zero_parameters(module: torch.nn.Module, seed: int = 0) -> None:
    """PyG initialises biases to zero, which would hide a misplaced bias: draw them instead."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.numel() and not bool(p.any()):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)


# ------------------------------------------------------------------ the one layer check
def assert_layer(sgnn_layer, pyg_layer, x, edge_index, *, check_inputs: bool = True,
                 **kwargs) -> torch.Tensor:
    """Load ``pyg_layer``'s state_dict into ``sgnn_layer`` and check that they agree (rel. ≤ 1e-5).

    Also checks ``str()`` and ``state_dict`` keys, and (with ``check_inputs``) that the sgnn layer
    gives the same result for the same graph as an ``sgnn.SparseTensor``, a torch sparse CSR and
    COO ``adj_t``, a scipy CSR (graphs without self loops or duplicates, no edge_attr), with
    permuted edges, and with 1 thread instead of 2. ``x`` may be a torch sparse tensor
    (PyG is given its dense copy). ``kwargs`` go to both forwards (edge_weight, edge_attr, size).
    Returns the sgnn output.
    """
    randomize_zero_parameters(pyg_layer)
    pyg_layer.eval()
    sgnn_layer.load_state_dict(pyg_layer.state_dict())
    sgnn_layer.eval()
    assert str(sgnn_layer) == str(pyg_layer), f"repr: {sgnn_layer} != {pyg_layer}"
    assert list(sgnn_layer.state_dict().keys()) == list(pyg_layer.state_dict().keys()), "state_dict keys"
    cached = getattr(pyg_layer, "cached", False)  # a `cached` layer keeps its first graph: rerun fresh copies
    pristine_s, pristine_p = (copy.deepcopy(sgnn_layer), copy.deepcopy(pyg_layer)) if cached else \
        (sgnn_layer, pyg_layer)

    with torch.no_grad():
        ref = pyg_layer(dense(x), edge_index, **kwargs)
        with num_threads(2):
            out = sgnn_layer(x, edge_index, **kwargs)
        assert_close(out, ref, "edge_index vs PyG")
        if not check_inputs:
            return out

        def run(layer, adj, **kw):
            fresh = copy.deepcopy(layer) if cached else layer
            return fresh(x if layer is pristine_s else dense(x), adj, **kw)

        n_src, n_dst = sizes(x, kwargs)
        w = kwargs.get("edge_weight")
        edge_aligned = kwargs.get("edge_attr") is not None
        if is_simple(edge_index) and not edge_aligned:
            rest = {k: v for k, v in kwargs.items() if k != "edge_weight"}
            st = sgnn_adj(edge_index, n_src, n_dst, w)
            first = None
            for layout in (torch.sparse_csr, torch.sparse_coo, torch.sparse_csc):
                a = adj_t(edge_index, n_src, n_dst, w, layout)
                try:  # PyG's meaning of a sparse adj_t (GCN: `improved` loops weigh 2 with values)
                    ref_sp, label = run(pristine_p, a, **rest), "PyG on the same adj_t"
                except (NotImplementedError, ValueError, RuntimeError, AssertionError, TypeError):
                    ref_sp, label = first if first is not None else (out, "sgnn edge_index (PyG rejects adj_t)")
                    label = f"{label} (PyG rejects {layout})"
                first = first or (ref_sp, label)
                assert_close(run(pristine_s, a, **rest), ref_sp, f"torch {layout} adj_t vs {label}")
                if layout == torch.sparse_csr:  # sparse inputs share PyG's sparse adj_t rules
                    assert_close(run(pristine_s, st, **rest), ref_sp, f"sgnn.SparseTensor adj vs {label}")
                    a_sp = sgnn.SparseTensor.from_scipy(sgnn.SparseTensor.from_torch(a).to_scipy())
                    assert_close(run(pristine_s, a_sp, **rest), ref_sp, f"scipy adj_t vs {label}")

        from torch_geometric import EdgeIndex
        per_edge = any(kwargs.get(k) is not None for k in ("edge_weight", "edge_attr"))
        for sort in (None,) if per_edge else (None, "col"):  # PyG's EdgeIndex, also with its cached CSC
            e = EdgeIndex(edge_index.contiguous(), sparse_size=(n_src, n_dst))
            e = e.sort_by(sort)[0] if sort else e
            assert_close(run(pristine_s, e, **kwargs), out, f"EdgeIndex (sort={sort}) vs edge_index")

        perm = torch.randperm(edge_index.size(1), generator=torch.Generator().manual_seed(1))
        kw_p = dict(kwargs)
        for k in ("edge_weight", "edge_attr"):
            if kwargs.get(k) is not None:
                kw_p[k] = kwargs[k][perm]
        assert_close(run(pristine_s, edge_index[:, perm], **kw_p), out, "permuted edges")

        with num_threads(1):
            one = run(pristine_s, edge_index, **kwargs)
        assert_close(one, out, "1 thread vs 2 threads")
    assert_same_gradients(pristine_s, pristine_p, x, edge_index, **kwargs)
    return out


def assert_same_gradients(sgnn_layer, pyg_layer, x, edge_index, **kwargs) -> None:
    """With autograd on: the same output and the same parameter (and feature) gradients as PyG."""
    if isinstance(x, torch.Tensor) and x.layout != torch.strided:
        return  # PyG is given dense copies of sparse features: no common leaf to compare
    s, p = copy.deepcopy(sgnn_layer), copy.deepcopy(pyg_layer)
    if kwargs.get("edge_weight") is not None:
        kwargs = dict(kwargs, edge_weight=kwargs["edge_weight"].detach())
    leaves = []
    for layer in (s, p):
        xs = tuple(t.clone().requires_grad_(True) if t is not None else None for t in x) \
            if isinstance(x, (tuple, list)) else x.clone().requires_grad_(True)
        out = layer(xs, edge_index, **kwargs)
        if not out.numel():
            return
        out.mul(torch.linspace(-1, 1, out.numel()).view(out.shape)).sum().backward()
        leaves.append((out.detach(), xs))
    assert_close(leaves[0][0], leaves[1][0], "autograd output vs PyG", 1e-4)
    xs_s = leaves[0][1] if isinstance(x, (tuple, list)) else (leaves[0][1],)
    xs_p = leaves[1][1] if isinstance(x, (tuple, list)) else (leaves[1][1],)
    for a, b in zip(xs_s, xs_p):
        if b is not None and b.grad is not None:
            assert a.grad is not None, "no gradient reached x"
            assert_close(a.grad, b.grad, "x.grad vs PyG", GRAD_RTOL)
    grads_p = {n: q.grad for n, q in p.named_parameters()}
    for n, q in s.named_parameters():
        if grads_p[n] is None:
            assert q.grad is None or not bool(q.grad.any()), f"{n}: gradient where PyG has none"
        else:
            assert q.grad is not None, f"{n}: no gradient"
            assert_close(q.grad, grads_p[n], f"{n}.grad vs PyG", GRAD_RTOL)


# ------------------------------------------------------------------ graphs
def random_edges(n_src: int, n_dst: int, e: int, seed: int, loops: bool = False) -> torch.Tensor:
    """``e`` distinct random directed edges (no self loops unless ``loops``), in random order."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, n_src, (4 * e + 8,), generator=g)
    dst = torch.randint(0, n_dst, (4 * e + 8,), generator=g)
    keep = torch.ones_like(src, dtype=torch.bool) if loops else src != dst
    ei = torch.unique(torch.stack([src[keep], dst[keep]]), dim=1)
    ei = ei[:, torch.randperm(ei.size(1), generator=g)[:e]]
    return ei


def make_graph(name: str, seed: int = 0) -> tuple[int, torch.Tensor]:
    """(num_nodes, edge_index) of a named test graph."""
    g = torch.Generator().manual_seed(seed)
    if name == "directed":
        return 50, random_edges(50, 50, 300, seed)
    if name == "isolated":  # nodes 40..59 have no edges at all
        return 60, random_edges(40, 40, 200, seed)
    if name == "self_loops":  # one existing loop on every third node
        ei = random_edges(50, 50, 250, seed)
        loops = torch.arange(0, 50, 3).repeat(2, 1)
        cat = torch.cat([ei, loops], 1)
        return 50, cat[:, torch.randperm(cat.size(1), generator=g)]
    if name == "duplicates":  # 60 repeated (non-loop) edges
        ei = random_edges(50, 50, 250, seed)
        cat = torch.cat([ei, ei[:, :40], ei[:, :20]], 1)
        return 50, cat[:, torch.randperm(cat.size(1), generator=g)]
    if name == "messy":  # both: loops on every third node and repeated edges (loops and others)
        n, ei = make_graph("duplicates", seed)
        loops = torch.arange(0, 50, 3).repeat(2, 1)
        cat = torch.cat([ei, loops, loops[:, :5]], 1)
        return n, cat[:, torch.randperm(cat.size(1), generator=g)]
    if name == "hub":  # node 0 linked both ways with 10,000 others, plus random edges
        n = 10_001
        others = torch.arange(1, n)
        hub = torch.zeros_like(others)
        ei = torch.cat([torch.stack([others, hub]), torch.stack([hub, others]),
                        random_edges(n, n, 2_000, seed)], 1)
        ei = torch.unique(ei, dim=1)
        return n, ei[:, torch.randperm(ei.size(1), generator=g)]
    if name == "no_edges":
        return 10, torch.empty(2, 0, dtype=torch.long)
    if name == "one_node":
        return 1, torch.empty(2, 0, dtype=torch.long)
    raise KeyError(name)


GRAPHS = ["directed", "isolated", "self_loops", "duplicates", "hub", "no_edges", "one_node"]


def features(n: int, f: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, f, generator=torch.Generator().manual_seed(seed))


def sparse_features(n: int, f: int, density: float = 0.02, seed: int = 0) -> torch.Tensor:
    """A dense matrix with about ``density`` nonzeros (sgnn runs X·W sparse×dense above 65536 entries)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, f, generator=g)
    return x * (torch.rand(n, f, generator=g) < density)


# ------------------------------------------------------------------ option tables and DGL graphs
T, Fa = True, False
ABBR = {"improved": "imp", "cached": "cache", "add_self_loops": "loops", "normalize": "norm", "bias": "bias",
        "aggr": "", "root_weight": "root", "project": "proj", "heads": "h", "concat": "cat",
        "negative_slope": "slope", "dropout": "drop", "residual": "res", "edge_dim": "edim",
        "fill_value": "fill"}


def opt_id(opts: dict) -> str:
    return "-".join(f"{ABBR.get(k, k)}{int(v) if isinstance(v, bool) else v}" for k, v in opts.items())


def edge_weight(e: int, seed: int = 3) -> torch.Tensor:
    return torch.rand(e, generator=torch.Generator().manual_seed(seed)) + 0.1  # positive: deg^-1/2 is real


def table(**choices):
    """Every combination of the options, with the parity of its choice indices.

    The parity picks the scenario (graph, weights, channel order) a combination runs in: fixing
    any one option value, the others still take both parities, so each value of each option meets
    every scenario while each combination runs only once (or once per scenario pair).
    """
    keys = list(choices)
    for idx in itertools.product(*(range(len(v)) for v in choices.values())):
        yield {k: choices[k][i] for k, i in zip(keys, idx)}, sum(idx) % 2


def flat(opts: dict) -> dict:
    """Expand grouped options, e.g. {"normalize,add_self_loops": (T, Fa)} → two keyword arguments."""
    out = {}
    for k, v in opts.items():
        out.update(zip(k.split(","), v) if "," in k else [(k, v)])
    return out


def dgl_graph(ei: torch.Tensor, n: int, self_loops: bool):
    dgl = pytest.importorskip("dgl", reason="dgl is not importable")
    g = dgl.graph((ei[0], ei[1]), num_nodes=n)
    return dgl.add_self_loop(dgl.remove_self_loop(g)) if self_loops else g


def symmetric_graph():
    n, ei = make_graph("isolated")
    sym = torch.unique(torch.cat([ei, ei.flip(0)], 1), dim=1)
    return n, sym
