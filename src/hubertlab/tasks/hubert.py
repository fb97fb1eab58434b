"""HuBERT masked prediction as a training task: the model predicts the units of masked frames
(and, with unmasked_weight > 0, of the others); the loss is normalised by the masked frames of
the whole step, plus the feature penalty (one mean per batch, weight 10)."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from hubertlab.config import to_dict
from hubertlab.data.dataset import Batch
from hubertlab.data.valid import ValidBatches
from hubertlab.models import checkpoint as model_checkpoint
from hubertlab.models.config import HubertConfig
from hubertlab.models.convert import legacy_to_ours
from hubertlab.models.hubert import HEAD_PREFIXES, HubertModel
from hubertlab.tasks.base import TaskBase, TaskLoss
from hubertlab.tasks.data import pretraining_batches, pretraining_valid_batches

log = logging.getLogger(__name__)


def model_config(cfg: Any) -> HubertConfig:
    """The model config of a TrainConfig: its preset (or pretrained model's config) with the
    overrides and the data's unit counts applied, checked once as a whole."""
    overrides = {**cfg.model.overrides, "num_units": list(cfg.data.num_units)}
    if cfg.model.from_pretrained is None:
        return HubertConfig.from_dict(
            {"preset": cfg.model.preset, **overrides}, where="model.overrides"
        )
    pretrained, _ = model_checkpoint.read_checkpoint(cfg.model.from_pretrained)
    return HubertConfig.from_dict({**to_dict(pretrained), **overrides}, where="model.overrides")


class HubertTask(TaskBase):
    """Masked prediction of k-means units (REFERENCE 2)."""

    names = {"hubert": "HuBERT"}
    kind = "hubert"
    needs_units = True
    head_prefixes = HEAD_PREFIXES
    metric_names = (
        "num_masked",
        "num_unmasked",
        "correct_masked",
        "correct_unmasked",
        "feature_penalty",
        "loss_masked_sum",
        "loss_unmasked_sum",
    )

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self._model_cfg: HubertConfig | None = None

    @staticmethod
    def check_config(cfg: Any) -> None:
        """What a HuBERT run needs of its config; the model config is only built (and checked)
        here when no pretrained checkpoint must be read for it."""
        if not cfg.data.num_units:  # train_units files, or units in the train_shards
            raise ValueError("data.train_units: HuBERT predicts units; give one file per unit set")
        if cfg.model.from_pretrained is None:
            model_config(cfg).backbone.check_frame_layout()

    @property
    def hubert_config(self) -> HubertConfig:
        if self._model_cfg is None:
            self._model_cfg = model_config(self.cfg)
            self._model_cfg.backbone.check_frame_layout()
        return self._model_cfg

    def build_model(self) -> nn.Module:
        """A fresh model, or continued pretraining from model.from_pretrained: the backbone is
        kept; the head too if it fits the unit counts, else it starts fresh."""
        model_cfg = self.hubert_config
        path = self.cfg.model.from_pretrained
        if path is None:
            return HubertModel(model_cfg)
        pretrained_cfg, state = model_checkpoint.read_checkpoint(path)
        keep_head = not self.cfg.model.new_head and model_cfg.num_units == pretrained_cfg.num_units
        model = model_checkpoint.build_model(model_cfg, state, keep_head=keep_head, where=str(path))
        log.info(
            "continued pretraining from %s (%s)",
            path,
            "head kept" if keep_head else f"new head for {model_cfg.num_units} units",
        )
        return model

    @staticmethod
    def model_from_state(state: dict[str, Any]) -> nn.Module:
        model = HubertModel(HubertConfig.from_dict(state["model_config"], where="model_config"))
        model.load_state_dict(legacy_to_ours(state["model"]))
        return model

    def model_config(self, model: nn.Module) -> dict[str, Any]:
        return to_dict(model.cfg)

    def train_batches(self, *, rank: int, world_size: int, pin_memory: bool):
        return pretraining_batches(
            self.cfg, self.cfg.mask, units=True, rank=rank, world_size=world_size,
            pin_memory=pin_memory,
        )  # fmt: skip

    def valid_batches(self, *, rank: int, world_size: int) -> ValidBatches | None:
        return pretraining_valid_batches(
            self.cfg, self.cfg.mask, units=True, rank=rank, world_size=world_size
        )

    def normaliser(self, batch: Batch) -> int:
        return batch.num_masked

    def loss(self, model: nn.Module, batch: Batch, generator: torch.Generator) -> TaskLoss:
        out = model(
            batch.waveforms,
            batch.lengths,
            batch.labels,
            mask=batch.mask,
            layerdrop_generator=generator,
        )
        return TaskLoss(
            loss_sum=out.loss_sum,
            mean_loss=self.hubert_config.feature_penalty_weight * out.feature_penalty,
            metrics={
                "num_masked": out.num_masked,
                "num_unmasked": out.num_unmasked,
                "correct_masked": out.correct_masked,
                "correct_unmasked": out.correct_unmasked,
                "feature_penalty": out.feature_penalty.detach(),
                "loss_masked_sum": out.loss_masked_sum.detach(),
                "loss_unmasked_sum": out.loss_unmasked_sum.detach(),
            },
        )

    def summarize(self, totals: dict[str, float]) -> dict[str, float]:
        masked = max(totals["num_masked"], 1.0)
        unmasked = max(totals["num_unmasked"], 1.0)
        sets = len(self.hubert_config.num_units)
        return {
            "masked_acc": totals["correct_masked"] / (masked * sets),
            "unmasked_acc": totals["correct_unmasked"] / (unmasked * sets),
            "masked_loss": totals["loss_masked_sum"] / masked,
            "feature_penalty": totals["feature_penalty"] / max(totals["batches"], 1.0),
            "num_masked": int(totals["num_masked"]),
        }

    def may_skip_parameters(self) -> bool:
        return super().may_skip_parameters() or self.hubert_config.backbone.layerdrop > 0
