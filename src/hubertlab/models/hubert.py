"""HuBERT: the shared backbone (models/backbone.py), a mask embedding, and the masked-prediction
head (cosine similarity to one learned embedding per unit, temperature 0.1) with its loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hubertlab.models.backbone import Backbone, init_bert_params
from hubertlab.models.config import HubertConfig
from hubertlab.models.linear import Linear

# The masked-prediction head's weights: a pretrained model's backbone is read without them.
HEAD_PREFIXES = ("final_proj.", "unit_embeddings.")


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


class HubertModel(nn.Module):
    """HuBERT: the backbone, a mask embedding, and the masked-prediction head (one projection and
    one unit-embedding table per unit set); see HubertConfig for the sizes."""

    def __init__(self, cfg: HubertConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = Backbone(cfg.backbone)
        hidden_dim = cfg.backbone.hidden_dim
        self.mask_embedding = nn.Parameter(torch.empty(hidden_dim).uniform_())
        # One projection and one embedding table per unit set (cluster ensembles).
        self.final_proj = nn.ModuleList(Linear(hidden_dim, cfg.final_dim) for _ in cfg.num_units)
        self.unit_embeddings = nn.ParameterList(
            nn.Parameter(torch.empty(k, cfg.final_dim).uniform_()) for k in cfg.num_units
        )
        init_bert_params(self)

    def extract_features(
        self,
        waveforms: torch.Tensor,
        lengths: torch.Tensor | None = None,
        *,
        output_layer: int | None = None,
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The backbone's hidden states (see Backbone.extract_features)."""
        return self.backbone.extract_features(waveforms, lengths, output_layer=output_layer)

    # ---------------------------------------------------------------- pretraining
    def forward(
        self,
        waveforms: torch.Tensor,
        lengths: torch.Tensor | None = None,
        labels: list[torch.Tensor] | None = None,
        mask: torch.Tensor | None = None,
        layerdrop_generator: torch.Generator | None = None,
    ) -> HubertOutput:
        """Masked prediction of `labels` (one (batch, frames) long tensor per unit set; negative
        ids are ignored). `mask` (batch, >= frames) bool marks the frames replaced by the mask
        embedding (drawn once, by the data pipeline; None: nothing masked).
        `layerdrop_generator` decides which layers to skip: under DDP seed it identically on
        every rank."""
        backbone = self.backbone
        features, valid, frame_lengths = backbone.cnn_features(waveforms, lengths)
        batch, frames = features.shape[:2]
        valid_f = features if valid is None else features[valid]
        feature_penalty = valid_f.float().square().mean()
        x = backbone.project(features)
        span_mask = torch.zeros(batch, frames, dtype=torch.bool, device=x.device)
        if mask is not None:
            if mask.shape[0] != batch or mask.shape[1] < frames:
                raise ValueError(f"mask of shape {tuple(mask.shape)}, expected ({batch}, {frames})")
            span_mask = mask[:, :frames].to(x.device)
            x = torch.where(span_mask[..., None], self.mask_embedding.to(x.dtype), x)
        skip = backbone.layerdrop_skips(layerdrop_generator)
        x = backbone.final_norm(backbone.encoder(x, valid, skip=skip)[-1])
        valid_mask = torch.ones_like(span_mask) if valid is None else valid
        span_mask = span_mask & valid_mask
        out = HubertOutput(
            loss_sum=None,
            num_masked=span_mask.sum(),
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
