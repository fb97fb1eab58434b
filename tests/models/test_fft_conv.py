"""The FFT path of HuBERT's positional conv, and the CNN's LayerNorm + GELU layout path, against
the plain torch operations they replace (values and gradients)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hubertlab.models import components
from hubertlab.models.components import PositionalConv, layer_norm_gelu
from hubertlab.models.fft_conv import fft_length, fft_pays, same_grouped_conv


def _is_5_smooth(n: int) -> bool:
    for prime in (2, 3, 5):
        while n % prime == 0:
            n //= prime
    return n == 1


def test_fft_length_is_the_smallest_5_smooth_length_at_least_asked():
    for minimum in range(1, 400):
        length = fft_length(minimum)
        assert length >= minimum and _is_5_smooth(length), (minimum, length)
        assert not any(_is_5_smooth(n) for n in range(minimum, length)), (minimum, length)
    assert fft_length(276) == 288 and fft_length(129) == 135 and fft_length(1) == 1


@pytest.mark.parametrize(
    ("batch", "channels", "frames", "kernel", "groups"),
    [(3, 32, 40, 16, 4), (2, 12, 7, 5, 3), (1, 8, 50, 128, 2), (4, 6, 30, 9, 1)],
)
def test_same_grouped_conv_matches_conv1d_in_values_and_gradients(
    batch, channels, frames, kernel, groups
):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels, frames, generator=g, dtype=torch.float64)
    w = torch.randn(channels, channels // groups, kernel, generator=g, dtype=torch.float64)
    grad = torch.randn(batch, channels, frames, generator=g, dtype=torch.float64)
    outputs = []
    for conv in (
        lambda x, w: F.conv1d(x, w, padding=kernel // 2, groups=groups)[..., :frames],
        lambda x, w: same_grouped_conv(x, w, groups),
    ):
        xi, wi = x.clone().requires_grad_(), w.clone().requires_grad_()
        y = conv(xi, wi)
        y.backward(grad.to(y.dtype))
        outputs.append((y.double(), xi.grad, wi.grad))
    (y_ref, gx_ref, gw_ref), (y, gx, gw) = outputs
    # same_grouped_conv computes in float32
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gw, gw_ref, rtol=1e-4, atol=1e-3)


def test_positional_conv_gives_the_same_output_and_gradients_on_both_paths(monkeypatch):
    torch.manual_seed(0)
    conv = PositionalConv(dim=32, kernel=16, groups=4)
    x = torch.randn(8, 20, 32)
    assert fft_pays(batch=8, channels_per_group=8)  # the default path here is the FFT
    results = {}
    for path, pays in (("fft", True), ("direct", False)):
        monkeypatch.setattr(components, "fft_pays", lambda batch, cpg, pays=pays: pays)
        conv.zero_grad()
        xi = x.clone().requires_grad_()
        y = conv(xi)
        y.square().sum().backward()
        results[path] = (y, xi.grad, conv.weight_v.grad.clone(), conv.bias.grad.clone())
    for fft_value, direct_value in zip(results["fft"], results["direct"], strict=True):
        torch.testing.assert_close(fft_value, direct_value, rtol=1e-4, atol=1e-4)


def test_fft_pays_only_when_the_batch_amortises_the_weight_spectrum():
    assert fft_pays(batch=8, channels_per_group=16)  # the demo's tiny HuBERT
    assert not fft_pays(batch=1, channels_per_group=16)
    assert not fft_pays(batch=2, channels_per_group=48)  # HuBERT-base, small batch


def test_layer_norm_gelu_matches_the_transposed_view_version():
    torch.manual_seed(0)
    norm = nn.LayerNorm(16)
    x = torch.randn(3, 16, 50)
    grad = torch.randn(3, 16, 50)
    results = []
    for fn in (
        lambda x: F.gelu(norm(x.transpose(1, 2)).transpose(1, 2)),
        lambda x: layer_norm_gelu(x, norm),
    ):
        norm.zero_grad()
        xi = x.clone().requires_grad_()
        y = fn(xi)
        y.backward(grad)
        results.append((y, xi.grad, norm.weight.grad.clone()))
    assert results[1][0].is_contiguous()
    for ref, ours in zip(*results, strict=True):
        torch.testing.assert_close(ours, ref)
