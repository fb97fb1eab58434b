"""SpidR and DinoSR (REFERENCE 7.1): self-distillation on the shared backbone.

The student is the backbone (CNN + projection + Transformer). The teacher is an EMA copy of the
student's Transformer encoder only: it reads the *unmasked* projected features, runs in eval
mode without gradients, and was re-initialised at construction (it does not start equal to the
student). Its last `num_codebooks` layers' intermediate outputs (feed-forward output before the
residual add), instance-normalised over time, are quantised by online codebooks; each head
predicts a codebook's codeword on masked frames. SpidR's head i reads the student's
intermediate output of the same layer; DinoSR's heads all read the last layer. The loss of a
masked frame is the mean over heads of the cross-entropy.

State-dict keys follow our backbone (`backbone.cnn.*`, `backbone.encoder.*`) plus `teacher.*`
(the encoder's keys), `heads.{i}.*`, `codebooks.{i}.{sums,counts}`, `mask_embedding` and
`current_step`; models/spidr_keys.py converts to and from the spidr package's names.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hubertlab.models.backbone import Backbone, Encoder
from hubertlab.models.codebooks import Codebooks
from hubertlab.models.components import SelfAttention
from hubertlab.models.linear import Linear
from hubertlab.models.spidr_config import DistillConfig


@dataclass
class DistillOutput:
    """One training/validation forward. Per-frame values are over the masked frames, in the
    order of `mask.nonzero()` (row by row, frames ascending)."""

    loss_sum: torch.Tensor  # sum over masked frames of the per-frame loss
    frame_losses: torch.Tensor  # (N,) mean over heads of the cross-entropy
    labels: torch.Tensor  # (codebooks, N) codeword indices (the targets)
    targets: list[torch.Tensor]  # per codebook (N, dim) normalised teacher outputs, fp32
    log_probs: list[torch.Tensor]  # per head (N, codebook_size)
    target_counts: torch.Tensor  # (codebooks, codebook_size) assignments in this batch
    pred_sums: torch.Tensor  # (codebooks, codebook_size) summed predicted probabilities
    correct: torch.Tensor  # argmax hits, summed over heads
    num_masked: int
    frame_lengths: torch.Tensor  # (batch,)


class DistillModel(nn.Module):
    """SpidR or DinoSR (cfg.kind); see the module doc."""

    # Trained on audio standardised per utterance by the data path (not inside the model):
    # feature extraction must standardise too.
    expects_standardized_audio = True

    def __init__(self, cfg: DistillConfig) -> None:
        super().__init__()
        self.cfg = cfg
        dim = cfg.backbone.hidden_dim
        self.backbone = Backbone(cfg.backbone)
        init_encoder(self.backbone.encoder)
        for layer in self.backbone.cnn.layers:
            nn.init.kaiming_normal_(layer.conv.weight)
        self.mask_embedding = nn.Parameter(torch.empty(dim).uniform_())
        self.teacher = copy.deepcopy(self.backbone.encoder)
        init_encoder(self.teacher)
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        self.heads = nn.ModuleList(Linear(dim, cfg.codebook_size) for _ in cfg.target_layers)
        self.codebooks = Codebooks(cfg.num_codebooks, dim, cfg.codebook_size, cfg.codebook_decay)
        self.register_buffer("current_step", torch.zeros(1, dtype=torch.long))
        for name in self.never_trained():
            self.get_parameter(name).requires_grad_(False)

    def never_trained(self) -> list[str]:
        """Parameters no optimizer step changes: the teacher's (it moves by EMA) and, for
        SpidR, the student's last feed-forward LayerNorm, which no loss term reads."""
        names = [f"teacher.{n}" for n, _ in self.teacher.named_parameters()]
        if self.cfg.kind == "spidr" and not self.cfg.backbone.pre_ln:
            last = f"backbone.encoder.layers.{self.cfg.backbone.num_layers - 1}.ffn_norm."
            names += [n for n, _ in self.named_parameters() if n.startswith(last)]
        return names

    def train(self, mode: bool = True) -> DistillModel:
        super().train(mode)
        self.teacher.eval()
        return self

    # --- Outputs as the spidr package defines them ---

    def intermediate_outputs(
        self,
        waveforms: torch.Tensor,
        lengths: torch.Tensor | None = None,
        *,
        before_residual: bool = True,
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The student's intermediate output of every layer (feed-forward output before the
        residual add; spidr's get_intermediate_outputs), each (batch, frames, dim), and the
        frame lengths. With before_residual=False, the usual hidden states (layer outputs,
        as Backbone.extract_features gives them without the input entry). No masking; call
        eval() for dropout-free outputs."""
        return intermediate_outputs(
            self.backbone, waveforms, lengths, before_residual=before_residual
        )

    def codebook_predictions(
        self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[list[torch.Tensor | None], torch.Tensor]:
        """Per layer (1..L), the head's codeword probabilities (batch, frames, codebook_size)
        or None for layers without a head (spidr's get_codebooks; DinoSR's heads all read the
        last layer but are listed at the target layers); and the frame lengths."""
        features, valid, frame_lengths = self.backbone.cnn_features(waveforms, lengths)
        feats = self.backbone.feature_proj(self.backbone.feature_norm(features))
        head_inputs = self._head_inputs(feats, valid, None)
        probs = [
            head(x).float().softmax(-1) for head, x in zip(self.heads, head_inputs, strict=True)
        ]
        return [None] * (self.cfg.backbone.num_layers - len(probs)) + probs, frame_lengths

    def _head_inputs(
        self, x: torch.Tensor, valid: torch.Tensor | None, skip: list[bool] | None
    ) -> list[torch.Tensor]:
        """What each head reads: SpidR, the intermediate output of its layer; DinoSR, the
        last layer's output (after the final LayerNorm of pre-LN models)."""
        num = self.cfg.num_codebooks
        if self.cfg.kind == "spidr":
            _, ffns = self.backbone.encoder.run(x, valid, skip=skip, ffn_outputs=True)
            return ffns[-num:]
        hidden, _ = self.backbone.encoder.run(x, valid, skip=skip)
        return [self.backbone.final_norm(hidden[-1])] * num

    @torch.no_grad()
    def teacher_targets(
        self, feats: torch.Tensor, valid: torch.Tensor | None
    ) -> list[torch.Tensor]:
        """The teacher's last num_codebooks intermediate outputs, fp32, each instance-
        normalised per utterance and channel over its valid frames: (batch, frames, dim)."""
        _, ffns = self.teacher.run(feats, valid, ffn_outputs=True)
        return [instance_norm(t.float(), valid) for t in ffns[-self.cfg.num_codebooks :]]

    # --- Training ---

    def forward(
        self,
        waveforms: torch.Tensor,
        lengths: torch.Tensor | None = None,
        *,
        mask: torch.Tensor,
        layerdrop_generator: torch.Generator | None = None,
    ) -> DistillOutput:
        """The loss on the masked frames of `mask` (batch, frames) bool. In training, the
        batch's codebook statistics are added to the step's (see Codebooks.apply_update)."""
        features, valid, frame_lengths = self.backbone.cnn_features(waveforms, lengths)
        feats = self.backbone.feature_proj(self.backbone.feature_norm(features))
        mask = mask[:, : feats.shape[1]].to(feats.device)
        if valid is not None:
            mask = mask & valid
        x = self.backbone.input_dropout(feats)
        x = torch.where(mask[..., None], self.mask_embedding.to(x.dtype), x)
        skip = self.backbone.layerdrop_skips(layerdrop_generator)
        selected: dict[int, torch.Tensor] = {}  # DinoSR's heads share one input: select once
        log_probs = []
        for head, h in zip(self.heads, self._head_inputs(x, valid, skip), strict=True):
            if id(h) not in selected:
                selected[id(h)] = h[mask]  # (N, dim)
            log_probs.append(F.log_softmax(head(selected[id(h)]), dim=-1))
        targets = [t[mask] for t in self.teacher_targets(feats.detach(), valid)]
        labels = self.codebooks.assign(targets)  # (codebooks, N)
        frame_losses = -torch.stack(
            [lp.gather(1, lab[:, None])[:, 0] for lp, lab in zip(log_probs, labels, strict=True)]
        ).mean(0)  # (N,)
        with torch.no_grad():
            probs = [lp.detach().float().exp() for lp in log_probs]
            counts, sums, pred_sums = self.codebooks.statistics(targets, labels, probs)
            if self.training:
                self.codebooks.pending.add(counts, sums, pred_sums)
            correct = sum(
                (lp.argmax(-1) == lab).sum() for lp, lab in zip(log_probs, labels, strict=True)
            )
        return DistillOutput(
            loss_sum=frame_losses.sum(),
            frame_losses=frame_losses,
            labels=labels,
            targets=targets,
            log_probs=log_probs,
            target_counts=counts,
            pred_sums=pred_sums,
            correct=correct,
            num_masked=int(labels.shape[1]),
            frame_lengths=frame_lengths,
        )

    @torch.no_grad()
    def update_teacher(self, step: int) -> float:
        """The EMA update after optimizer step `step` (1-based): teacher <- decay teacher +
        (1 - decay) student; positional-conv weights and buffers are copied. Returns the
        decay (1: the teacher is frozen and nothing changes)."""
        self.current_step.fill_(step)
        decay = self.cfg.teacher_decay(step)
        if not 0.0 < decay < 1.0:
            return decay
        lerp_t, lerp_s, copy_t, copy_s = [], [], [], []
        student = self.backbone.encoder
        for (name, t), s in zip(self.teacher.named_parameters(), student.parameters(), strict=True):
            copied = name.startswith("pos_conv.")
            (copy_t if copied else lerp_t).append(t)
            (copy_s if copied else lerp_s).append(s.detach())
        copy_t += list(self.teacher.buffers())
        copy_s += list(student.buffers())
        if lerp_t:
            torch._foreach_lerp_(
                lerp_t, [s.to(t.dtype) for t, s in zip(lerp_t, lerp_s, strict=True)], 1 - decay
            )
        for t, s in zip(copy_t, copy_s, strict=True):
            t.copy_(s)
        return decay


def intermediate_outputs(
    backbone: Backbone,
    waveforms: torch.Tensor,
    lengths: torch.Tensor | None = None,
    *,
    before_residual: bool = True,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """DistillModel.intermediate_outputs of a bare backbone (the student), for callers that
    hold a copy of it (features.hidden.LayerExtractor)."""
    features, valid, frame_lengths = backbone.cnn_features(waveforms, lengths)
    feats = backbone.feature_proj(backbone.feature_norm(features))
    hidden, ffns = backbone.encoder.run(
        feats, valid, keep_all=not before_residual, ffn_outputs=before_residual
    )
    return (ffns if before_residual else hidden[1:]), frame_lengths


def instance_norm(x: torch.Tensor, valid: torch.Tensor | None, eps: float = 1e-5) -> torch.Tensor:
    """Zero mean, unit variance over time per utterance and channel, without affine
    parameters, statistics over the valid frames only: x (batch, frames, dim)."""
    if valid is None:
        return F.instance_norm(x.transpose(1, 2), eps=eps).transpose(1, 2)
    m = valid[..., None].to(x.dtype)  # (batch, frames, 1)
    count = m.sum(1, keepdim=True).clamp(min=1)
    mean = (x * m).sum(1, keepdim=True) / count
    var = ((x - mean).square() * m).sum(1, keepdim=True) / count
    return (x - mean) * torch.rsqrt(var + eps)


def init_encoder(encoder: Encoder) -> None:
    """The spidr package's Transformer init: Linear N(0, 0.02) with zero biases, then qkv
    Xavier-uniform (gain 1/sqrt 2) and the attention output Xavier-uniform with zero bias."""
    for m in encoder.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    for m in encoder.modules():
        if isinstance(m, SelfAttention):
            nn.init.xavier_uniform_(m.qkv.weight, gain=1 / math.sqrt(2))
            nn.init.xavier_uniform_(m.out.weight)
            nn.init.zeros_(m.out.bias)
