"""HuBERT's positional convolution (grouped, kernel 128, 'same' padding) through the FFT.

On the CPU, oneDNN's grouped convolution with a 128-tap kernel is slow: in the demo's tiny
HuBERT (8 x 149 frames x 256 channels, 16 groups) its forward and backward took 47 ms of a
230 ms training step in bf16. In the frequency domain the same layer is a small complex
matrix product per group and frequency: 11 ms for forward and backward together, in float32,
with gradients equal to the direct convolution's to rounding (tests/models/test_fft_conv.py).
The weight's spectrum costs in proportion to the weight times the FFT length whatever the
batch, so the FFT pays only when the batch is large beside the channels per group
(`fft_pays`); HuBERT-base's positional conv (48 channels per group) at a batch of 2 is faster
direct.
"""

from __future__ import annotations

import torch


def fft_length(minimum: int) -> int:
    """The smallest 2^a 3^b 5^c >= minimum: lengths the FFT handles fastest."""
    best = 1 << max(minimum - 1, 0).bit_length()
    power2 = 1
    while power2 < best:
        power3 = power2
        while power3 < best:
            length = power3
            while length < best:
                if length >= minimum:
                    best = length
                length *= 5
            power3 *= 3
        power2 *= 2
    return best


def fft_pays(batch: int, channels_per_group: int) -> bool:
    """Whether the FFT beats oneDNN's direct grouped convolution on the CPU. Measured on a
    2-core AVX-512 CPU over batches 1-16, 50-1,500 frames, 16 and 48 channels per group
    (training in bf16 and inference in float32): the FFT won from batch >= channels / 4 on,
    2-4x at the demo's shapes, and lost below it (up to 3x at batch 1 of HuBERT-base)."""
    return 4 * batch >= channels_per_group


def same_grouped_conv(x: torch.Tensor, weight: torch.Tensor, groups: int) -> torch.Tensor:
    """F.conv1d(x, weight, padding=kernel // 2, groups=groups)[..., :frames] in float32 via
    the FFT. x (batch, channels, frames), weight (channels, channels // groups, kernel)."""
    with torch.autocast(x.device.type, enabled=False):
        return _FFTGroupedConv.apply(x.float(), weight.float(), groups)


class _FFTGroupedConv(torch.autograd.Function):
    """y = x (*) h per group, h the kernel laid out for a circular convolution of length n
    (n >= frames + kernel - 1, so nothing wraps round); the backward is two more products in
    the frequency domain (conjugate spectra), then the kernel's taps read back from h."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, groups: int) -> torch.Tensor:
        batch, channels, frames = x.shape
        out_channels, group_channels, kernel = weight.shape
        n = fft_length(frames + kernel - 1)
        # y[t] = sum_j w[j] x[t + j - kernel // 2]  =>  h[(kernel // 2 - j) mod n] = w[j]
        taps = (kernel // 2 - torch.arange(kernel, device=x.device)) % n
        h = x.new_zeros(out_channels, group_channels, n)
        h[..., taps] = weight
        bins = n // 2 + 1
        # (groups, bins, group in, group out) and (groups, bins, batch, group in)
        h_spec = torch.fft.rfft(h, n=n).view(groups, -1, group_channels, bins).permute(0, 3, 2, 1)
        x_spec = torch.fft.rfft(x, n=n).view(batch, groups, group_channels, bins)
        x_spec = x_spec.permute(1, 3, 0, 2)
        y_spec = (x_spec @ h_spec).permute(2, 0, 3, 1).reshape(batch, out_channels, bins)
        ctx.save_for_backward(x_spec, h_spec, taps)
        ctx.sizes = (n, frames, groups)
        return torch.fft.irfft(y_spec, n=n)[..., :frames]

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        x_spec, h_spec, taps = ctx.saved_tensors
        n, frames, groups = ctx.sizes
        batch, bins = x_spec.shape[2], x_spec.shape[1]
        grad_spec = torch.fft.rfft(grad_y, n=n).view(batch, groups, -1, bins).permute(1, 3, 0, 2)
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            gx_spec = grad_spec @ h_spec.conj().transpose(-1, -2)  # (groups, bins, batch, in)
            gx_spec = gx_spec.permute(2, 0, 3, 1).reshape(batch, -1, bins)
            grad_x = torch.fft.irfft(gx_spec, n=n)[..., :frames]
        if ctx.needs_input_grad[1]:
            gh_spec = x_spec.conj().transpose(-1, -2) @ grad_spec  # (groups, bins, in, out)
            group_channels = gh_spec.shape[2]
            gh_spec = gh_spec.permute(0, 3, 2, 1).reshape(-1, group_channels, bins)
            grad_weight = torch.fft.irfft(gh_spec, n=n)[..., taps]
        return grad_x, grad_weight, None
