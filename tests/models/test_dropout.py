"""The models' CPU dropout: F.dropout's contract (drop rate p, kept values scaled by 1/(1-p),
identity in eval), seeded by torch's default generator, gradients through the same mask."""

import pytest
import torch

from hubertlab.models.components import Dropout, dropout


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5])
def test_drops_a_fraction_p_and_keeps_the_expectation(p):
    torch.manual_seed(0)
    x = torch.ones(400, 1000)
    y = dropout(x, p)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - p) < 0.005
    kept = y[y != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1 / (1 - p)))
    assert abs(y.mean().item() - 1.0) < 0.02


def test_every_element_is_drawn_independently():
    # Adjacent elements come from slices of one random word: their drops must not correlate,
    # and every one of the four slices must drop at the same rate.
    torch.manual_seed(1)
    y = dropout(torch.ones(1_000_000), 0.5).view(-1, 4) == 0
    rates = y.float().mean(0)
    assert torch.all((rates - 0.5).abs() < 0.005), rates
    both = (y[:, 0] & y[:, 1]).float().mean().item()
    assert abs(both - 0.25) < 0.005


def test_seeded_like_torch_and_identity_in_eval():
    x = torch.randn(3, 50, 16)
    torch.manual_seed(5)
    a = dropout(x, 0.2)
    torch.manual_seed(5)
    b = dropout(x, 0.2)
    assert torch.equal(a, b)
    assert not torch.equal(a, dropout(x, 0.2))  # the generator moved on
    assert dropout(x, 0.2, training=False) is x
    assert dropout(x, 0.0) is x
    module = Dropout(0.2).eval()
    assert module(x) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))


def test_gradient_flows_through_the_same_mask():
    x = torch.randn(64, 64, requires_grad=True)
    torch.manual_seed(2)
    y = dropout(x, 0.3)
    y.sum().backward()
    expected = torch.where(y != 0, 1 / 0.7, 0.0)
    assert torch.allclose(x.grad, expected)


def test_bf16_input_stays_bf16():
    x = torch.randn(8, 32).bfloat16()
    assert dropout(x, 0.1).dtype == torch.bfloat16
