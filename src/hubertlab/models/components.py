"""Backbone building blocks with plain arguments: CNN waveform encoder, convolutional position
embeddings, Transformer layer. `backbone.py` assembles them from a BackboneConfig."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hubertlab.models.fft_conv import fft_pays, same_grouped_conv
from hubertlab.models.linear import Linear


class GradMultiply(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by `scale` (fairseq feature_grad_mult:
    the CNN learns 10x slower than the Transformer)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.scale, None


def conv_output_lengths(
    lengths: torch.Tensor | int, kernels: tuple[int, ...], strides: tuple[int, ...]
) -> torch.Tensor | int:
    """Frames a stack of unpadded 1-d convolutions yields for `lengths` input samples (a
    tensor, or a Python int: no tensor then, so nothing for torch.compile to trace)."""
    for k, s in zip(kernels, strides, strict=True):
        lengths = (lengths - k) // s + 1  # floor division for ints and tensors alike
        lengths = lengths.clamp(min=0) if torch.is_tensor(lengths) else max(lengths, 0)
    return lengths


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout, as F.dropout. On CPU the keep mask comes from 16-bit slices of 64-bit
    random words (p rounded to 1/65536): torch's CPU bernoulli draws one Mersenne-Twister number
    per element, which made dropout ~15% of a tiny model's training step. Draws from torch's
    default generator, so seeding and a resumed run's RNG state work as with F.dropout."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return F.dropout(x, p, training=True)
    num_words = (x.numel() + 3) // 4
    words = torch.empty(num_words, dtype=torch.int64).random_(-(2**63), 2**63 - 1)
    draws = words.view(torch.int16)[: x.numel()].view(x.shape)  # uniform in [-32768, 32767]
    keep = draws >= round(p * 65536) - 32768  # P(drop) = p
    return x * torch.where(keep, 1.0 / (1.0 - p), 0.0).to(x.dtype)


class Dropout(nn.Dropout):
    """nn.Dropout through `dropout` (the fast CPU mask); same state dict (none) and repr."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


def lengths_to_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """(batch, width) bool, True on the first `lengths[b]` positions of row b."""
    return torch.arange(width, device=lengths.device)[None, :] < lengths[:, None]


class ConvLayer(nn.Module):
    """Conv1d -> optional norm (GroupNorm with one group per channel, or LayerNorm over
    channels) -> GELU, on (batch, channels, frames)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        stride: int,
        *,
        norm: str | None,
        bias: bool,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel, stride, bias=bias)
        if norm == "group":
            self.norm: nn.Module | None = nn.GroupNorm(out_channels, out_channels)
        elif norm == "layer":
            self.norm = nn.LayerNorm(out_channels)
        else:
            self.norm = None

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """`lengths`: valid input samples per row; only the GroupNorm statistics need them, so
        that padding does not change the features of a row."""
        x = self.conv(x)  # (batch, channels, frames)
        if isinstance(self.norm, nn.GroupNorm):
            frames = None
            if lengths is not None:
                frames = conv_output_lengths(lengths, self.conv.kernel_size, self.conv.stride)
            if frames is None or bool((frames >= x.shape[-1]).all()):
                x = self.norm(x)
            else:
                x = _masked_instance_norm(x, lengths_to_mask(frames, x.shape[-1]), self.norm)
        elif isinstance(self.norm, nn.LayerNorm):
            return layer_norm_gelu(x, self.norm)
        return F.gelu(x)


def layer_norm_gelu(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    """GELU(LayerNorm over channels) of x (batch, channels, frames), same layout out. GELU runs
    on the norm's contiguous (batch, frames, channels) output, and the way back is a contiguous
    copy both ways: on the transposed view GELU's backward mixed two memory layouts, which made
    the tiny SpidR's CNN (this norm on every layer) 1.7x slower, forward and backward."""
    return _ChannelsFirst.apply(F.gelu(norm(x.transpose(1, 2))))


class _ChannelsFirst(torch.autograd.Function):
    """(batch, frames, channels) -> contiguous (batch, channels, frames), and the gradient
    back to contiguous (batch, frames, channels)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2).contiguous()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.transpose(1, 2).contiguous()


def _masked_instance_norm(x: torch.Tensor, valid: torch.Tensor, norm: nn.GroupNorm) -> torch.Tensor:
    """GroupNorm(C groups over C channels) whose statistics ignore padded frames, so a padded
    row gives the same features as the row alone."""
    m = valid[:, None, :].to(x.dtype)  # (batch, 1, frames)
    count = m.sum(-1, keepdim=True).clamp(min=1)
    mean = (x * m).sum(-1, keepdim=True) / count
    var = ((x - mean).square() * m).sum(-1, keepdim=True) / count
    x = (x - mean) * torch.rsqrt(var + norm.eps)
    return x * norm.weight[None, :, None] + norm.bias[None, :, None]


class ConvFeatureEncoder(nn.Module):
    """Waveform (batch, samples) -> features (batch, frames, channels)."""

    def __init__(
        self,
        channels: tuple[int, ...],
        kernels: tuple[int, ...],
        strides: tuple[int, ...],
        *,
        norm: str,
        bias: bool,
    ) -> None:
        super().__init__()
        layers = []
        in_ch = 1
        for i, (ch, k, s) in enumerate(zip(channels, kernels, strides, strict=True)):
            layer_norm = "layer" if norm == "layer" else ("group" if i == 0 else None)
            layers.append(ConvLayer(in_ch, ch, k, s, norm=layer_norm, bias=bias))
            in_ch = ch
        self.layers = nn.ModuleList(layers)

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        x = waveforms[:, None, :]  # (batch, 1, samples)
        for layer in self.layers:
            # Only layer 0 can carry a GroupNorm; it needs the input lengths in samples.
            x = layer(x, lengths)
            lengths = None
        return x.transpose(1, 2)  # (batch, frames, channels)


class PositionalConv(nn.Module):
    """Convolutional relative position embedding: grouped Conv1d with weight norm over dim 2,
    'same' padding minus the last frame for even kernels, GELU. Parameters are stored as
    weight_g (1, 1, kernel) and weight_v like torch's weight_norm(dim=2)."""

    def __init__(self, dim: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.kernel, self.groups = kernel, groups
        v = torch.empty(dim, dim // groups, kernel)
        nn.init.normal_(v, mean=0.0, std=math.sqrt(4.0 / (kernel * dim)))
        self.weight_v = nn.Parameter(v)
        self.weight_g = nn.Parameter(v.norm(dim=(0, 1), keepdim=True))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """x (batch, frames, dim) with padded frames already zeroed; `valid` is not needed."""
        # weight_v * weight_g / ||weight_v|| over dims 0 and 1, as torch's weight_norm computes
        # it: one fused kernel each way (the same expression spelt out in Python took ~2% of a
        # HuBERT-base training step on CPU).
        weight = torch._weight_norm(self.weight_v, self.weight_g, 2)
        frames = x.shape[1]
        if x.device.type == "cpu" and fft_pays(x.shape[0], weight.shape[1]):
            y = same_grouped_conv(x.transpose(1, 2), weight, self.groups) + self.bias[:, None]
        else:
            y = F.conv1d(
                x.transpose(1, 2), weight, self.bias, padding=self.kernel // 2, groups=self.groups
            )[:, :, :frames]  # an even kernel gives one frame more
        return F.gelu(y).transpose(1, 2)  # (batch, frames, dim)


class StackedPositionalConv(nn.Module):
    """Convolutional position embedding of data2vec 2 / SpidR: `num_layers` grouped Conv1d
    ('same' padding, odd kernel), each followed by a LayerNorm without affine parameters and
    GELU; no weight norm. Padded frames are zeroed before every convolution and in the output,
    so they never reach a valid frame (as the spidr package does)."""

    def __init__(self, dim: int, kernel: int, groups: int, num_layers: int, eps: float) -> None:
        super().__init__()
        if kernel % 2 == 0:
            raise ValueError(f"a stacked positional conv needs an odd kernel, got {kernel}")
        self.dim, self.eps = dim, eps
        self.convs = nn.ModuleList(
            nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=groups)
            for _ in range(num_layers)
        )

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """x (batch, frames, dim); valid (batch, frames) bool or None (nothing padded)."""
        keep = None if valid is None else valid[:, None, :].to(x.dtype)  # (batch, 1, frames)
        y = x.transpose(1, 2)  # (batch, dim, frames)
        for conv in self.convs:
            if keep is not None:
                y = y * keep
            y = conv(y).transpose(1, 2)  # (batch, frames, dim)
            y = F.gelu(F.layer_norm(y, (self.dim,), eps=self.eps)).transpose(1, 2)
        if keep is not None:
            y = y * keep
        return y.transpose(1, 2)


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused qkv projection, via scaled_dot_product_attention
    (no mask tensor when nothing is padded)."""

    def __init__(self, dim: int, num_heads: int, *, dropout: float, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads, self.dropout = num_heads, dropout
        self.qkv = Linear(dim, 3 * dim, bias=qkv_bias)
        self.out = Linear(dim, dim)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        """x (batch, frames, dim); attn_mask (batch, 1, 1, frames) bool, True = attend, or None
        when nothing is padded."""
        batch, frames, dim = x.shape
        shape = (batch, frames, self.num_heads, dim // self.num_heads)
        q, k, v = (t.view(shape).transpose(1, 2) for t in self.qkv(x).split(dim, dim=-1))
        # q, k, v: (batch, heads, frames, head_dim)
        p_drop = self.dropout if self.training else 0.0
        if p_drop > 0 and x.device.type == "cpu":
            # On CPU, SDPA with dropout falls back to a math kernel that is ~12% slower than
            # these three explicit steps (measured on the HuBERT-base block); same result.
            scores = (q * q.shape[-1] ** -0.5) @ k.transpose(
                -1, -2
            )  # (batch, heads, frames, frames)
            if attn_mask is not None:
                scores = scores.masked_fill(~attn_mask, float("-inf"))
            y = dropout(scores.softmax(-1), p_drop) @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p_drop)
        return self.out(y.transpose(1, 2).reshape(batch, frames, dim))


class TransformerLayer(nn.Module):
    """Self-attention + feed-forward block, post-LN (base) or pre-LN (large, xlarge)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ffn_dim: int,
        *,
        pre_ln: bool,
        dropout: float,
        attention_dropout: float,
        activation_dropout: float,
        eps: float,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        self.pre_ln = pre_ln
        self.attention = SelfAttention(dim, num_heads, dropout=attention_dropout, qkv_bias=qkv_bias)
        self.attn_norm = nn.LayerNorm(dim, eps=eps)
        self.fc1 = Linear(dim, ffn_dim)
        self.fc2 = Linear(ffn_dim, dim)
        self.ffn_norm = nn.LayerNorm(dim, eps=eps)
        self.dropout = Dropout(dropout)
        self.activation_dropout = Dropout(activation_dropout)

    def _ffn(self, x: torch.Tensor) -> torch.Tensor:
        """The feed-forward output before its dropout and residual add: what SpidR and DinoSR
        call a layer's intermediate output."""
        return self.fc2(self.activation_dropout(F.gelu(self.fc1(x))))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        return self.forward_with_ffn(x, attn_mask)[0]

    def forward_with_ffn(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's output and its feed-forward output before the residual (see _ffn)."""
        if self.pre_ln:
            x = x + self.dropout(self.attention(self.attn_norm(x), attn_mask))
            ffn = self._ffn(self.ffn_norm(x))
            return x + self.dropout(ffn), ffn
        x = self.attn_norm(x + self.dropout(self.attention(x, attn_mask)))
        ffn = self._ffn(x)
        return self.ffn_norm(x + self.dropout(ffn)), ffn
