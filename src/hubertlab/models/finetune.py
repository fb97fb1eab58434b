"""Fine-tuning models: an encoder (a pretrained or random Backbone, or a small MFCC frame model)
and one linear head over its frames, read from one layer or a learned softmax-weighted sum of
all of them. VTC: one output per class (sigmoid); CTC: one output per vocabulary token.

The weighted sum is part of the forward (the public VTC recipe creates the layer weights and
then reads only the last layer): every layer's hidden state is mixed, so the weights get
gradients and change the output (tested).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from hubertlab.config import from_dict, to_dict
from hubertlab.constants import num_frames
from hubertlab.models.backbone import Backbone, init_bert_params
from hubertlab.models.checkpoint import from_pretrained
from hubertlab.models.components import lengths_to_mask
from hubertlab.models.config import BACKBONE_PRESETS, BackboneConfig
from hubertlab.models.mfcc import compute_mfcc

WEIGHTED = "weighted"


@dataclass(frozen=True)
class FinetuneModelConfig:
    """What a checkpoint keeps to rebuild a fine-tuning model."""

    task: str  # the task's name ([finetune] task); hubertlab.tasks reads it, nothing here does
    outputs: tuple[str, ...]  # class names (vtc) or vocabulary tokens, id order (ctc)
    encoder: Literal["backbone", "mfcc"] = "backbone"
    backbone: BackboneConfig | None = None  # encoder "backbone"
    mfcc_dim: int = 256  # encoder "mfcc": width of the MFCC frame model (= the head's input)
    layer: int | Literal["weighted"] = WEIGHTED  # hidden state the head reads
    dropout: float = 0.1  # before the head

    def __post_init__(self) -> None:
        if not self.outputs:
            raise ValueError("outputs: the head needs at least one class or token")
        if self.encoder == "backbone" and self.backbone is None:
            raise ValueError("backbone: encoder 'backbone' needs a backbone config")
        if isinstance(self.layer, int) and not 0 <= self.layer <= self.num_layers:
            raise ValueError(f"layer: must be in [0, {self.num_layers}] or 'weighted'")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout: must be in [0, 1), got {self.dropout}")
        if self.mfcc_dim < 1:
            raise ValueError(f"mfcc_dim: must be >= 1, got {self.mfcc_dim}")

    @property
    def num_layers(self) -> int:
        """Transformer layers of the encoder (the MFCC model has one hidden state: layer 0)."""
        return self.backbone.num_layers if self.encoder == "backbone" else 0

    @property
    def dim(self) -> int:
        return self.backbone.hidden_dim if self.encoder == "backbone" else self.mfcc_dim


class MfccEncoder(nn.Module):
    """The MFCC-input baseline: 39-d MFCC + deltas at 100 Hz (models.mfcc), normalised per
    utterance, the two 10 ms frames of each 20 ms frame stacked (78-d, frame k = MFCC frames 2k
    and 2k + 1, so frame k covers samples [320 k, 320 k + 560): the HuBERT grid), then a small
    frame model: Linear(78, dim) + GELU, Conv1d(dim, dim, 5) + GELU (110 ms of context),
    LayerNorm. Its output has the width of the head's input, so the head is the same size as
    the pretrained encoder's."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.num_layers = 0
        self.proj = nn.Linear(78, dim)
        self.conv = nn.Conv1d(dim, dim, kernel_size=5, padding=2)
        self.norm = nn.LayerNorm(dim)

    def extract_features(
        self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        if lengths is None:
            lengths = torch.full((waveforms.shape[0],), waveforms.shape[1])
        with torch.no_grad(), torch.autocast(waveforms.device.type, enabled=False):
            mfcc, mfcc_lengths = compute_mfcc(waveforms.float(), lengths.cpu())
            mfcc_lengths = mfcc_lengths.to(waveforms.device)
            valid = lengths_to_mask(mfcc_lengths, mfcc.shape[1])[..., None].float()
            count = valid.sum(1, keepdim=True).clamp(min=1)
            mean = (mfcc * valid).sum(1, keepdim=True) / count
            std = (((mfcc - mean) * valid).square().sum(1, keepdim=True) / count).sqrt()
            mfcc = (mfcc - mean) / (std + 1e-5) * valid  # (batch, mfcc frames, 39)
        frames = num_frames(waveforms.shape[1])
        mfcc = F.pad(mfcc, (0, 0, 0, 2 * frames - mfcc.shape[1]))
        x = mfcc.reshape(mfcc.shape[0], frames, 78)  # (batch, frames, 78)
        frame_lengths = torch.tensor([num_frames(int(n)) for n in lengths], device=x.device)
        valid = lengths_to_mask(frame_lengths, frames)[..., None]
        x = F.gelu(self.proj(x)) * valid
        x = F.gelu(self.conv(x.transpose(1, 2)).transpose(1, 2))
        return [self.norm(x) * valid], frame_lengths


class FinetuneModel(nn.Module):
    """Encoder + (layer choice or weighted sum) + dropout + Linear(dim, outputs)."""

    def __init__(self, cfg: FinetuneModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.encoder == "backbone":
            self.backbone: nn.Module = Backbone(cfg.backbone)
        else:
            self.backbone = MfccEncoder(cfg.mfcc_dim)
        if cfg.layer == WEIGHTED:
            # Zeros: the softmax starts as the plain mean of every hidden state.
            self.layer_weights = nn.Parameter(torch.zeros(cfg.num_layers + 1))
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.dim, len(cfg.outputs))

    def hidden_states(
        self,
        waveforms: torch.Tensor,
        lengths: torch.Tensor | None,
        generator: torch.Generator | None = None,
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The hidden states the head may read ([input, layer 1, ...] up to the chosen layer;
        the last one through the pre-LN final norm) and frame lengths."""
        if self.cfg.encoder == "mfcc":
            return self.backbone.extract_features(waveforms, lengths)
        backbone = self.backbone
        features, valid, frame_lengths = backbone.cnn_features(waveforms, lengths)
        x = backbone.project(features)
        stop = backbone.num_layers if self.cfg.layer == WEIGHTED else self.cfg.layer
        skip = backbone.layerdrop_skips(generator)
        hidden = backbone.encoder(x, valid, num_layers=stop, skip=skip, keep_all=True)
        if stop == backbone.num_layers:
            hidden[-1] = backbone.final_norm(hidden[-1])
        return hidden, frame_lengths

    def layer_mix(self) -> torch.Tensor | None:
        """(layers + 1,) softmax weights of the hidden states, None for one chosen layer."""
        if self.cfg.layer != WEIGHTED:
            return None
        return torch.softmax(self.layer_weights.float(), dim=0)

    def forward(
        self,
        waveforms: torch.Tensor,
        lengths: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (batch, frames, outputs) and frame lengths (batch,)."""
        hidden, frame_lengths = self.hidden_states(waveforms, lengths, generator)
        weights = self.layer_mix()
        if weights is None:
            x = hidden[-1]
        else:
            stacked = torch.stack(hidden)  # (layers + 1, batch, frames, dim)
            x = (weights.to(stacked.dtype)[:, None, None, None] * stacked).sum(0)
        return self.head(self.dropout(x)), frame_lengths


def build_finetune_model(
    cfg: FinetuneModelConfig, backbone_state: dict[str, torch.Tensor] | None = None
) -> FinetuneModel:
    """A fresh model; the backbone gets `backbone_state` (pretrained weights) when given, else
    the BERT-style initialisation HuBERT pretraining starts from."""
    model = FinetuneModel(cfg)
    if cfg.encoder == "backbone":
        if backbone_state is None:
            init_bert_params(model.backbone)
        else:
            model.backbone.load_state_dict(backbone_state)
    return model


def pretrained_backbone(
    path: str, overrides: dict[str, Any]
) -> tuple[BackboneConfig, dict[str, torch.Tensor]]:
    """The backbone config (with `overrides`: dropouts, layerdrop) and weights of any checkpoint
    from_pretrained reads (ours, transformers, torchaudio, fairseq, and what it learns next)."""
    loaded = from_pretrained(path, keep_head=False)
    backbone = getattr(loaded, "backbone", loaded)
    if not isinstance(backbone, Backbone):
        raise ValueError(f"{path}: the checkpoint holds no Backbone ({type(backbone).__name__})")
    try:
        cfg = dataclasses.replace(backbone.cfg, **overrides)
    except TypeError as e:
        raise ValueError(f"finetune.overrides: {e}") from None
    return cfg, backbone.state_dict()


def random_backbone_config(preset: str, overrides: dict[str, Any]) -> BackboneConfig:
    """The backbone of a preset with `overrides` (the random-init baseline)."""
    if preset not in BACKBONE_PRESETS:
        raise ValueError(
            f"finetune.preset: unknown {preset!r} (known: {', '.join(BACKBONE_PRESETS)})"
        )
    fields = {**to_dict(BACKBONE_PRESETS[preset]), **overrides}
    return from_dict(BackboneConfig, fields, where="finetune.overrides")


def model_from_state(state: dict[str, Any]) -> FinetuneModel:
    """The model of a fine-tuning training checkpoint (a torch.load'ed dict)."""
    cfg = from_dict(FinetuneModelConfig, dict(state["model_config"]), where="model_config")
    model = FinetuneModel(cfg)
    model.load_state_dict(state["model"])
    return model


def model_for_section(section: Any, outputs: tuple[str, ...], dropout: float) -> FinetuneModel:
    """A fresh model as a [finetune] section asks (hubertlab.tasks.finetune_config): its
    encoder pretrained, random or MFCC, its layer, and a head over `outputs` after `dropout`."""
    fields: dict[str, Any] = dict(
        task=section.task, outputs=outputs, layer=section.layer, dropout=dropout
    )
    state = None
    if section.encoder == "mfcc":
        if section.overrides:
            raise ValueError("finetune.overrides: the MFCC encoder has no backbone to override")
        fields.update(encoder="mfcc", mfcc_dim=section.mfcc_dim)
    elif section.encoder == "random":
        fields["backbone"] = random_backbone_config(section.preset, dict(section.overrides))
    else:
        fields["backbone"], state = pretrained_backbone(section.encoder, dict(section.overrides))
    try:
        cfg = FinetuneModelConfig(**fields)
    except ValueError as e:
        raise ValueError(f"finetune.{e}") from None
    return build_finetune_model(cfg, state)
