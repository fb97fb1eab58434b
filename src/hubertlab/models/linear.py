"""nn.Linear whose fp32 CPU products run on oneDNN instead of the BLAS library.

PyTorch sends fp32 `F.linear` on CPU to its BLAS (MKL in the x86 wheels) and only reduced
precision to oneDNN. On the AMD EPYC we develop on, MKL's sgemm reaches 62-86 GFLOP/s on
HuBERT-base's forward products ((398 x 768) x (768 x 3072), one thread) where oneDNN's reaches
84-98; the backward input gradient gains too (78-95 -> ~102). The weight gradient stays on
BLAS, which is as fast there. Everything else (CUDA, bf16 autocast, other dtypes, torch builds
without oneDNN, empty inputs, code traced by torch.compile) takes `F.linear` unchanged.
`benchmarks/bench_model.py` prints both products' GFLOP/s and the model-level effect.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable


def _onednn_linear_op():
    """torch's oneDNN linear (the op inductor emits for CPU linears), or None without oneDNN."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._linear_pointwise.default
    except (AttributeError, RuntimeError):
        return None


_ONEDNN_LINEAR = _onednn_linear_op()


def _onednn_product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
    """x (N, in) times weight (out, in) transposed, plus bias: (N, out)."""
    return _ONEDNN_LINEAR(x, weight, bias, "none", [], "")


class _OneDnnLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
        rows = x.reshape(-1, x.shape[-1])
        ctx.save_for_backward(rows, weight)
        ctx.has_bias = bias is not None
        return _onednn_product(rows, weight, bias).view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        rows, weight = ctx.saved_tensors
        grad_rows = grad.reshape(-1, grad.shape[-1])
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            # weight.t() is a view: oneDNN reads the transposed layout without a copy.
            grad_x = _onednn_product(grad_rows, weight.t(), None)
            grad_x = grad_x.view(*grad.shape[:-1], weight.shape[1])
        if ctx.needs_input_grad[1]:
            grad_weight = grad_rows.t() @ rows
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_rows.sum(0)
        return grad_x, grad_weight, grad_bias


def uses_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether `linear(x, weight, ...)` takes the oneDNN path."""
    return (
        _ONEDNN_LINEAR is not None
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and x.numel() > 0
        and not torch.is_autocast_enabled("cpu")
        # Inductor lowers F.linear itself and cannot lower this op on plain weights.
        and not torch.compiler.is_compiling()
    )


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None):
    """`F.linear(x, weight, bias)`, through oneDNN for fp32 on CPU (see the module doc)."""
    if uses_onednn(x, weight):
        return _OneDnnLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """nn.Linear (same parameters and state-dict keys) computed by `linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
