"""HuBERT: CNN encoder, feature projection, mask embedding, Transformer and the masked-prediction
head (cosine similarity to one learned embedding per unit, temperature 0.1).

Hidden states (extract_features) follow fairseq's `extract_features(output_layer=L)` and
transformers' `hidden_states`: entry 0 is the Transformer input (after the position embedding,
and after the LayerNorm for post-LN models), entry L is the output of layer L after its residual
and norm. For pre-LN models (large, xlarge) the entries are the residual stream, *without* the
final LayerNorm, exactly like both references; the final LayerNorm only feeds the head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hubertlab.data.masking import compute_span_mask
from hubertlab.models.components import (
    ConvFeatureEncoder,
    GradMultiply,
    PositionalConv,
    TransformerLayer,
    conv_output_lengths,
    lengths_to_mask,
)
from hubertlab.models.config import HubertConfig
from hubertlab.models.linear import Linear


@dataclass
class HubertOutput:
    """What one training/validation forward returns. Sums, not means, so the loop can reduce
    them across ranks: loss = loss_sum / global num_masked + weight * feature_penalty."""

    loss_sum: torch.Tensor | None  # masked CE + unmasked_weight * unmasked CE, summed over sets
    num_masked: torch.Tensor  # masked labelled frames of unit set 0 (not summed over sets)
    num_unmasked: torch.Tensor
    feature_penalty: torch.Tensor  # mean squared CNN feature over valid frames (fp32 scalar)
    correct_masked: torch.Tensor | None  # argmax hits on masked frames, summed over unit sets
    correct_unmasked: torch.Tensor | None
    frame_lengths: torch.Tensor  # (batch,)
    loss_masked_sum: torch.Tensor | None = None  # the two CE sums, for logging
    loss_unmasked_sum: torch.Tensor | None = None
    mask: torch.Tensor | None = None  # (batch, frames) bool, the masked frames


class Encoder(nn.Module):
    """Position embedding + Transformer layers (+ the LayerNorm before or after them)."""

    def __init__(self, cfg: HubertConfig) -> None:
        super().__init__()
        self.pre_ln = cfg.pre_ln
        self.pos_conv = PositionalConv(cfg.hidden_dim, cfg.pos_conv_kernel, cfg.pos_conv_groups)
        self.norm = nn.LayerNorm(cfg.hidden_dim, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)
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
        attn_mask = None
        if valid is not None:
            x = x * valid[..., None].to(x.dtype)  # padded frames must not leak into pos_conv
            attn_mask = valid[:, None, None, :]  # (batch, 1, 1, frames): True = attend
        x = x + self.pos_conv(x)
        if not self.pre_ln:
            x = self.norm(x)
        x = self.dropout(x)
        outputs = [x]
        stop = len(self.layers) if num_layers is None else num_layers
        for i, layer in enumerate(self.layers[:stop]):
            if skip is None or not skip[i]:
                x = layer(x, attn_mask)
            if keep_all:
                outputs.append(x)
        return outputs if keep_all else [x]


class HubertModel(nn.Module):
    """HuBERT with its pretraining head; see HubertConfig for the sizes."""

    def __init__(self, cfg: HubertConfig) -> None:
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
        self.input_dropout = nn.Dropout(cfg.input_dropout)
        self.mask_embedding = nn.Parameter(torch.empty(cfg.hidden_dim).uniform_())
        self.encoder = Encoder(cfg)
        # One projection and one embedding table per unit set (cluster ensembles).
        self.final_proj = nn.ModuleList(
            Linear(cfg.hidden_dim, cfg.final_dim) for _ in cfg.num_units
        )
        self.unit_embeddings = nn.ParameterList(
            nn.Parameter(torch.empty(k, cfg.final_dim).uniform_()) for k in cfg.num_units
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """BERT-style init (fairseq init_bert_params): Linear N(0, 0.02), zero biases; Kaiming
        for the CNN."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Conv1d):
                nn.init.kaiming_normal_(module.weight)
                if module.bias is not None:
                    bound = 1 / math.sqrt(module.weight[0].numel())
                    nn.init.uniform_(module.bias, -bound, bound)

    # ---------------------------------------------------------------- feature path
    def _standardize(self, waveforms: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        if lengths is None:
            return F.layer_norm(waveforms, waveforms.shape[-1:])
        m = lengths_to_mask(lengths, waveforms.shape[1]).to(waveforms.dtype)
        count = m.sum(1, keepdim=True).clamp(min=1)
        mean = (waveforms * m).sum(1, keepdim=True) / count
        var = ((waveforms - mean).square() * m).sum(1, keepdim=True) / count
        return (waveforms - mean) * torch.rsqrt(var + 1e-5) * m

    def frame_lengths(self, num_samples: torch.Tensor | int) -> torch.Tensor | int:
        """CNN frames for each waveform length in samples."""
        return conv_output_lengths(num_samples, self.cfg.conv_kernels, self.cfg.conv_strides)

    def _cnn(
        self, waveforms: torch.Tensor, lengths: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """CNN features (batch, frames, channels), valid mask or None, frame lengths."""
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
            waveforms = self._standardize(waveforms, lengths)
        mult = self.cfg.feature_grad_mult
        if self.training and mult == 0:
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

    def cnn_features(
        self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """CNN encoder output (batch, frames, channels) and frame lengths (batch,)."""
        features, _, frame_lengths = self._cnn(waveforms, lengths)
        return features, frame_lengths

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
        features, valid, frame_lengths = self._cnn(waveforms, lengths)
        x = self.feature_proj(self.feature_norm(features))
        hidden = self.encoder(x, valid, num_layers=num_layers, keep_all=True)
        return hidden, frame_lengths

    # ---------------------------------------------------------------- pretraining
    def forward(
        self,
        waveforms: torch.Tensor,
        lengths: torch.Tensor | None = None,
        labels: list[torch.Tensor] | None = None,
        mask: bool = True,
        generator: torch.Generator | None = None,
        layerdrop_generator: torch.Generator | None = None,
    ) -> HubertOutput:
        """Masked prediction of `labels` (one (batch, frames) long tensor per unit set; negative
        ids are ignored). `generator` draws the span masks; `layerdrop_generator` (default:
        `generator`) decides which layers to skip: under DDP seed it identically on every rank.
        """
        cfg = self.cfg
        features, valid, frame_lengths = self._cnn(waveforms, lengths)
        batch, frames = features.shape[:2]
        valid_f = features if valid is None else features[valid]
        feature_penalty = valid_f.float().square().mean()
        x = self.input_dropout(self.feature_proj(self.feature_norm(features)))
        span_mask = torch.zeros(batch, frames, dtype=torch.bool, device=x.device)
        if mask and cfg.mask_prob > 0:
            span_mask = compute_span_mask(
                frame_lengths.cpu(),
                mask_prob=cfg.mask_prob,
                mask_length=cfg.mask_length,
                min_masks=cfg.min_masks,
                generator=generator,
                num_frames=frames,
            ).to(x.device)
            x = torch.where(span_mask[..., None], self.mask_embedding.to(x.dtype), x)
        skip = None
        if self.training and cfg.layerdrop > 0:
            gen = layerdrop_generator if layerdrop_generator is not None else generator
            skip = (torch.rand(cfg.num_layers, generator=gen) < cfg.layerdrop).tolist()
        x = self.encoder(x, valid, skip=skip)[-1]
        if cfg.pre_ln:
            x = self.encoder.norm(x)
        valid_mask = torch.ones_like(span_mask) if valid is None else valid
        out = HubertOutput(
            loss_sum=None,
            num_masked=(span_mask & valid_mask).sum(),
            num_unmasked=(~span_mask & valid_mask).sum(),
            feature_penalty=feature_penalty,
            correct_masked=None,
            correct_unmasked=None,
            frame_lengths=frame_lengths,
            mask=span_mask,
        )
        if labels is not None:
            self._add_loss(out, x, labels, valid_mask, span_mask)
        return out

    def _add_loss(
        self,
        out: HubertOutput,
        x: torch.Tensor,
        labels: list[torch.Tensor],
        valid: torch.Tensor,
        span_mask: torch.Tensor,
    ) -> None:
        cfg = self.cfg
        if len(labels) != len(cfg.num_units):
            raise ValueError(f"got {len(labels)} label sets, the model has {len(cfg.num_units)}")
        batch, frames = span_mask.shape
        zero = x.new_zeros((), dtype=torch.float32)
        loss_m, loss_u = zero, zero
        correct_m = torch.zeros((), dtype=torch.long, device=x.device)
        correct_u = torch.zeros((), dtype=torch.long, device=x.device)
        for j, target in enumerate(labels):
            if target.dim() != 2 or target.shape[0] != batch or target.shape[1] < frames:
                raise ValueError(
                    f"label set {j}: shape {tuple(target.shape)}, expected ({batch}, >= {frames})"
                )
            target = target[:, :frames].to(x.device)
            if bool((target >= cfg.num_units[j]).any()):
                raise ValueError(f"label set {j}: unit id >= num_units ({cfg.num_units[j]})")
            keep = valid & (target >= 0)  # (batch, frames)
            logits = self.unit_logits(x[keep], j)  # (frames kept, units)
            tgt, masked = target[keep], span_mask[keep]
            if j == 0:  # frames with an ignored (negative) label do not count
                out.num_masked, out.num_unmasked = masked.sum(), (~masked).sum()
            ce = F.cross_entropy(logits.float(), tgt, reduction="none")
            loss_m = loss_m + ce[masked].sum()
            loss_u = loss_u + ce[~masked].sum()
            hits = logits.argmax(-1) == tgt
            correct_m = correct_m + hits[masked].sum()
            correct_u = correct_u + hits[~masked].sum()
        out.loss_masked_sum, out.loss_unmasked_sum = loss_m, loss_u
        out.loss_sum = loss_m + cfg.unmasked_weight * loss_u if cfg.unmasked_weight else loss_m
        out.correct_masked, out.correct_unmasked = correct_m, correct_u

    def unit_logits(self, x: torch.Tensor, unit_set: int = 0) -> torch.Tensor:
        """Cosine similarity / temperature between projected frames x (N, dim) and every unit
        embedding of `unit_set`: one (N, final_dim) x (final_dim, K) product, (N, K) out."""
        proj = F.normalize(self.final_proj[unit_set](x).float(), dim=-1)  # (N, final_dim)
        emb = F.normalize(self.unit_embeddings[unit_set].float(), dim=-1)  # (K, final_dim)
        return (proj @ emb.T) / self.cfg.logit_temp
