"""Every registered cell builds, runs forward and backward, and has its formula's parameter count."""
import pytest
import torch

import cells


@pytest.mark.parametrize("name", cells.names())
def test_forward_backward_eager(name):
    m = n = 5
    layer = cells.build(name, m, n, backend="eager")
    out, _ = layer(torch.randn(2, 4, m))
    out.sum().backward()
    assert out.shape == (2, 4, n) and torch.isfinite(out).all()
    assert sum(p.numel() for p in layer.parameters()) == cells.get(name).count(m, n)
    assert all(p.grad is not None for p in layer.parameters())
