"""FLOP counting and model FLOP utilisation on layers whose FLOPs are known by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vlarena.nn.flops import count_flops, utilisation


def test_a_linear_layer_counts_two_flops_per_multiply_add():
    layer = nn.Linear(64, 32)
    x = torch.randn(10, 64)
    out, flops = count_flops(lambda: layer(x))
    assert out.shape == (10, 32)
    assert flops == 2 * 10 * 64 * 32
    # a backward pass adds the two products of the gradients: input and weight
    _, with_backward = count_flops(lambda: layer(x.requires_grad_()).sum().backward())
    assert with_backward == 3 * flops


def test_utilisation_is_achieved_rate_over_peak():
    # 40,960 FLOPs per item at 1,000 items/s is 40.96 MFLOP/s: 40.96% of a 100 MFLOP/s peak
    assert utilisation(40_960, 1_000, 100e6) == pytest.approx(0.4096)
    with pytest.raises(ValueError):
        utilisation(1, 1.0, 0.0)
