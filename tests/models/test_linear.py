"""models.linear: the oneDNN fp32 CPU path must equal nn.Linear, values and gradients, and must
actually be taken where it is meant to be (a silent fallback would only show as lost speed)."""

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from hubertlab.models import linear as linear_mod
from hubertlab.models.linear import Linear, linear, uses_onednn

needs_onednn = pytest.mark.skipif(
    linear_mod._ONEDNN_LINEAR is None, reason="this torch build has no oneDNN"
)


def _op_names(fn) -> set[str]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {event.key for event in prof.key_averages()}


@needs_onednn
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(7, 12), (2, 5, 12)])
def test_values_and_gradients_equal_nn_linear(bias, shape):
    torch.manual_seed(0)
    ours = Linear(12, 9, bias=bias)
    reference = torch.nn.Linear(12, 9, bias=bias)
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(shape, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    grad = torch.randn(*shape[:-1], 9)
    y, y_ref = ours(x), reference(x_ref)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)
    y.backward(grad)
    y_ref.backward(grad)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.weight.grad, reference.weight.grad, rtol=1e-5, atol=1e-6)
    if bias:
        torch.testing.assert_close(ours.bias.grad, reference.bias.grad, rtol=1e-5, atol=1e-6)


@needs_onednn
def test_fp32_cpu_runs_on_onednn_forward_and_backward():
    layer = Linear(16, 8)
    x = torch.randn(4, 16, requires_grad=True)
    assert uses_onednn(x, layer.weight)
    ops = _op_names(lambda: layer(x).sum().backward())
    assert "mkldnn::_linear_pointwise" in ops
    assert "aten::addmm" not in ops  # the forward did not fall back to BLAS


def test_frozen_input_gets_no_gradient_and_weight_still_does():
    layer = Linear(6, 3)
    x = torch.randn(5, 6)  # no requires_grad: backward must skip the input product
    layer(x).square().sum().backward()
    expected = 2 * F.linear(x, layer.weight, layer.bias).T @ x
    torch.testing.assert_close(layer.weight.grad, expected.detach(), rtol=1e-5, atol=1e-5)
    assert x.grad is None


def test_fallbacks_keep_f_linear_semantics():
    layer = Linear(6, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not uses_onednn(torch.randn(2, 6), layer.weight)
        assert layer(torch.randn(2, 6)).dtype == torch.bfloat16  # autocast still applies
    empty = layer(torch.randn(0, 6))
    assert empty.shape == (0, 3)
    double = torch.randn(2, 6, dtype=torch.float64)
    y = linear(double, layer.weight.double(), layer.bias.double())
    assert y.dtype == torch.float64


def test_torch_compile_traces_through_f_linear():
    # Inductor cannot lower the oneDNN op on plain weights: a compiled graph must use F.linear.
    torch.manual_seed(0)
    layer = Linear(16, 8)
    x = torch.randn(4, 16, requires_grad=True)
    compiled = torch.compile(lambda inputs: layer(inputs).square().sum())
    compiled(x).backward()
    expected = torch.autograd.grad(F.linear(x, layer.weight, layer.bias).square().sum(), x)[0]
    torch.testing.assert_close(x.grad, expected, rtol=1e-5, atol=1e-5)
