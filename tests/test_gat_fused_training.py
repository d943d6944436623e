"""GAT training through the fused attention (derived backward) vs the edge-wise formulation."""
import pytest
import torch

from sgnn.layers import GATConv, edgewise


@pytest.mark.parametrize("heads,concat,edge_dim,share", [(4, True, None, True), (2, False, 3, True),
                                                          (3, True, None, False)])
def test_fused_training_matches_edgewise(monkeypatch, heads, concat, edge_dim, share):
    g = torch.Generator().manual_seed(0)
    n, e = 60, 400
    ei = torch.randint(0, n, (2, e), generator=g)
    ei = ei[:, ei[0] != ei[1]]
    ea = torch.randn(ei.shape[1], edge_dim, generator=g) if edge_dim else None
    x = torch.randn(n, 12, generator=g)
    torch.manual_seed(0)
    conv = GATConv(12 if share else (12, 12), 5, heads=heads, concat=concat, edge_dim=edge_dim,
                   residual=True).double()
    grads = []
    for threshold in (1 << 60, 0):  # edge-wise, then fused
        monkeypatch.setattr(edgewise, "FUSED_MIN_BYTES", threshold)
        conv.zero_grad()
        xx = x.double().requires_grad_()
        args = (xx if share else (xx, xx), ei) + ((ea.double(),) if edge_dim else ())
        out = conv(*args)
        (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)).sum().backward()
        grads.append([out.detach(), xx.grad] + [p.grad.clone() for p in conv.parameters() if p.grad is not None])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    assert len(grads[0]) == len(grads[1])


def test_dropout_and_weights_keep_edgewise(monkeypatch):
    monkeypatch.setattr(edgewise, "FUSED_MIN_BYTES", 0)
    ei = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 0]])
    conv = GATConv(4, 2, heads=2, dropout=0.5).train()
    out, (_, alpha) = conv(torch.randn(4, 4), ei, return_attention_weights=True)
    assert alpha.shape == (8, 2)
