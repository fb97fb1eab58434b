"""The backbone every model shares: CNN waveform encoder -> LayerNorm -> projection -> position
embedding -> Transformer layers. HuBERT, SpidR/DinoSR and the fine-tuning heads are built on it.

Hidden states (extract_features) follow fairseq's `extract_features(output_layer=L)` and
transformers' `hidden_states`: entry 0 is the Transformer input (after the position embedding,
and after the LayerNorm for post-LN models), entry L is the output of layer L after its residual
and norm. For pre-LN models (large, xlarge) the entries are the residual stream, *without* the
final LayerNorm, exactly like both references; `final_norm` applies it where a head needs it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hubertlab.models.components import (
    ConvFeatureEncoder,
    Dropout,
    GradMultiply,
    PositionalConv,
    StackedPositionalConv,
    TransformerLayer,
    conv_output_lengths,
    lengths_to_mask,
)
from hubertlab.models.config import BackboneConfig
from hubertlab.models.linear import Linear


class Encoder(nn.Module):
    """Position embedding + Transformer layers (+ the LayerNorm before or after them)."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.pre_ln = cfg.pre_ln
        if cfg.pos_conv == "stacked":
            self.pos_conv: nn.Module = StackedPositionalConv(
                cfg.hidden_dim,
                cfg.pos_conv_kernel,
                cfg.pos_conv_groups,
                cfg.pos_conv_layers,
                cfg.layer_norm_eps,
            )
        else:
            self.pos_conv = PositionalConv(cfg.hidden_dim, cfg.pos_conv_kernel, cfg.pos_conv_groups)
        self.norm = nn.LayerNorm(cfg.hidden_dim, eps=cfg.layer_norm_eps)
        self.dropout = Dropout(cfg.dropout)
        self.layers = nn.ModuleList(
            TransformerLayer(
                cfg.hidden_dim,
                cfg.num_heads,
                cfg.ffn_dim,
                pre_ln=cfg.pre_ln,
                dropout=cfg.dropout,
                attention_dropout=cfg.attention_dropout,
                activation_dropout=cfg.activation_dropout,
                eps=cfg.layer_norm_eps,
                qkv_bias=cfg.qkv_bias,
            )
            for _ in range(cfg.num_layers)
        )

    def forward(
        self,
        x: torch.Tensor,
        valid: torch.Tensor | None,
        *,
        num_layers: int | None = None,
        skip: list[bool] | None = None,
        keep_all: bool = False,
    ) -> list[torch.Tensor]:
        """Run layers 1..num_layers on x (batch, frames, dim); `valid` (batch, frames) bool or
        None when nothing is padded. Returns [input, layer outputs...] if keep_all, else
        [last output]."""
        hidden, _ = self.run(x, valid, num_layers=num_layers, skip=skip, keep_all=keep_all)
        return hidden

    def run(
        self,
        x: torch.Tensor,
        valid: torch.Tensor | None,
        *,
        num_layers: int | None = None,
        skip: list[bool] | None = None,
        keep_all: bool = False,
        ffn_outputs: bool = False,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """forward, plus (with ffn_outputs) every layer's feed-forward output before its
        residual add (SpidR's intermediate outputs), one per layer run. A layer skipped by
        layerdrop leaves the hidden state as it was, but still gives its feed-forward output
        when asked (as the spidr package does)."""
        attn_mask = None
        if valid is not None:
            x = x * valid[..., None].to(x.dtype)  # padded frames must not leak into pos_conv
            attn_mask = valid[:, None, None, :]  # (batch, 1, 1, frames): True = attend
        x = x + self.pos_conv(x, valid)
        if not self.pre_ln:
            x = self.norm(x)
        x = self.dropout(x)
        hidden, ffns = [x], []
        stop = len(self.layers) if num_layers is None else num_layers
        for i, layer in enumerate(self.layers[:stop]):
            skipped = skip is not None and skip[i]
            if ffn_outputs:
                out, ffn = layer.forward_with_ffn(x, attn_mask)
                ffns.append(ffn)
                x = x if skipped else out
            elif not skipped:
                x = layer(x, attn_mask)
            if keep_all:
                hidden.append(x)
        return (hidden if keep_all else [x]), ffns


class Backbone(nn.Module):
    """CNN + feature projection + Transformer encoder; see BackboneConfig for the sizes."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.cnn = ConvFeatureEncoder(
            cfg.conv_channels,
            cfg.conv_kernels,
            cfg.conv_strides,
            norm=cfg.conv_norm,
            bias=cfg.conv_bias,
        )
        self.feature_norm = nn.LayerNorm(cfg.conv_dim, eps=cfg.layer_norm_eps)  # fairseq layer_norm
        self.feature_proj = Linear(cfg.conv_dim, cfg.hidden_dim)  # fairseq post_extract_proj
        self.input_dropout = Dropout(cfg.input_dropout)
        self.encoder = Encoder(cfg)

    @property
    def num_layers(self) -> int:
        return self.cfg.num_layers

    @property
    def dim(self) -> int:
        return self.cfg.hidden_dim

    def frame_lengths(self, num_samples: torch.Tensor | int) -> torch.Tensor | int:
        """CNN frames for each waveform length in samples."""
        return conv_output_lengths(num_samples, self.cfg.conv_kernels, self.cfg.conv_strides)

    def cnn_features(
        self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """CNN features (batch, frames, channels), the valid-frame mask (batch, frames) or None
        when nothing is padded, and frame lengths (batch,). In training, the CNN gradient is
        scaled by feature_grad_mult (0: the CNN runs without gradient)."""
        if waveforms.dim() != 2:
            raise ValueError(f"waveforms must be (batch, samples), got {tuple(waveforms.shape)}")
        if self.frame_lengths(waveforms.shape[1]) < 1:
            raise ValueError(
                f"waveforms of {waveforms.shape[1]} samples are shorter than one CNN frame"
            )
        if lengths is not None:
            lengths = lengths.to(waveforms.device)
            if bool((lengths >= waveforms.shape[1]).all()):
                lengths = None  # nothing padded: take the fast paths
        if self.cfg.normalize_waveform:
            waveforms = standardize(waveforms, lengths)
        mult = self.cfg.feature_grad_mult
        frozen = not any(p.requires_grad for p in self.cnn.parameters())
        if self.training and (mult == 0 or frozen):
            with torch.no_grad():
                features = self.cnn(waveforms, lengths)
        else:
            features = self.cnn(waveforms, lengths)
            if self.training and mult != 1.0 and features.requires_grad:
                features = GradMultiply.apply(features, mult)
        batch, frames = features.shape[:2]
        if lengths is None:
            return features, None, torch.full((batch,), frames, device=features.device)
        frame_lengths = self.frame_lengths(lengths).clamp(max=frames)
        return features, lengths_to_mask(frame_lengths, frames), frame_lengths

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """CNN features -> Transformer width: LayerNorm, projection, input dropout."""
        return self.input_dropout(self.feature_proj(self.feature_norm(features)))

    def layerdrop_skips(self, generator: torch.Generator | None) -> list[bool] | None:
        """Which layers to skip in this training forward (None: run them all). Under DDP the
        generator must be seeded identically on every rank."""
        if not (self.training and self.cfg.layerdrop > 0):
            return None
        return (torch.rand(self.cfg.num_layers, generator=generator) < self.cfg.layerdrop).tolist()

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        """The pre-LN models' final LayerNorm (identity for post-LN): what a head reads."""
        return self.encoder.norm(x) if self.cfg.pre_ln else x

    def extract_features(
        self,
        waveforms: torch.Tensor,
        lengths: torch.Tensor | None = None,
        *,
        output_layer: int | None = None,
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Hidden states [Transformer input, layer 1, ..., layer L] (each (batch, frames, dim))
        and frame lengths (batch,). With `output_layer=L`, stops after layer L (returns L + 1
        entries). No masking, no layerdrop; call model.eval() for dropout-free features."""
        num_layers = self.cfg.num_layers if output_layer is None else output_layer
        if not 0 <= num_layers <= self.cfg.num_layers:
            raise ValueError(
                f"output_layer must be in [0, {self.cfg.num_layers}], got {output_layer}"
            )
        features, valid, frame_lengths = self.cnn_features(waveforms, lengths)
        x = self.project(features)
        hidden = self.encoder(x, valid, num_layers=num_layers, keep_all=True)
        return hidden, frame_lengths

    def forward(
        self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Last hidden state (final LayerNorm applied for pre-LN) and frame lengths."""
        hidden, frame_lengths = self.extract_features(waveforms, lengths)
        return self.final_norm(hidden[-1]), frame_lengths


def standardize(waveforms: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Zero mean, unit variance per row over its valid samples (padding stays zero)."""
    if lengths is None:
        return F.layer_norm(waveforms, waveforms.shape[-1:])
    m = lengths_to_mask(lengths, waveforms.shape[1]).to(waveforms.dtype)
    count = m.sum(1, keepdim=True).clamp(min=1)
    mean = (waveforms * m).sum(1, keepdim=True) / count
    var = ((waveforms - mean).square() * m).sum(1, keepdim=True) / count
    return (waveforms - mean) * torch.rsqrt(var + 1e-5) * m


def init_bert_params(module: nn.Module) -> None:
    """BERT-style init (fairseq init_bert_params): Linear N(0, 0.02), zero biases; Kaiming for
    the CNN's convolutions."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv1d):
            nn.init.kaiming_normal_(m.weight)
            if m.bias is not None:
                bound = 1 / math.sqrt(m.weight[0].numel())
                nn.init.uniform_(m.bias, -bound, bound)
