"""SpidR and DinoSR self-distillation as training tasks (`[model] kind = "spidr" | "dinosr"`).

No unit labels: the targets come from the model's own EMA teacher and online codebooks. The
loss is the per-masked-frame mean over heads of the cross-entropy, summed and normalised by the
masked frames of the whole step. After every applied optimizer step the codebooks take the
step's statistics (one all-reduce) and the teacher its EMA update; both live in the model's
state dict, so checkpoints and resumes carry them. Audio is standardised per utterance in the
data path, as these models were trained.

Perplexities (2 ** entropy of the average codeword distribution, targets and predictions, per
codebook) are computed from distribution sums the loop reduces over micro-batches, ranks and
the log window: with log_every = 1 they are the spidr package's per-step figures.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from hubertlab.config import to_dict
from hubertlab.data.dataset import Batch
from hubertlab.data.valid import ValidBatches
from hubertlab.models.codebooks import perplexity
from hubertlab.models.spidr import DistillModel
from hubertlab.models.spidr_config import DistillConfig
from hubertlab.models.spidr_io import read_distill_checkpoint
from hubertlab.tasks.base import TaskBase, TaskLoss
from hubertlab.tasks.data import pretraining_batches, pretraining_valid_batches

log = logging.getLogger(__name__)


def model_config(cfg: Any) -> DistillConfig:
    """The DistillConfig of a TrainConfig: [model] kind's preset (or the pretrained model's
    config) with the overrides applied, checked once as a whole."""
    overrides = dict(cfg.model.overrides)
    if cfg.model.from_pretrained is not None:
        pretrained, _ = read_distill_checkpoint(cfg.model.from_pretrained, kind=cfg.model.kind)
        if pretrained.kind != cfg.model.kind:
            raise ValueError(
                f"model.from_pretrained: {cfg.model.from_pretrained} is a {pretrained.kind} "
                f"model, model.kind is {cfg.model.kind!r}"
            )
        return DistillConfig.from_dict(
            {**to_dict(pretrained), **overrides}, where="model.overrides"
        )
    data = {"kind": cfg.model.kind, "preset": cfg.model.preset, **overrides}
    return DistillConfig.from_dict(data, where="model.overrides")


class DistillTask(TaskBase):
    """SpidR / DinoSR self-distillation (REFERENCE 7.1)."""

    names = {"spidr": "SpidR", "dinosr": "DinoSR"}  # one task, two model presets (its kind)

    # The CNN and the feature projection freeze together (the spidr recipe, from step 200k).
    cnn_prefixes = ("backbone.cnn.", "backbone.feature_norm.", "backbone.feature_proj.")

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.kind = cfg.model.kind
        self._model_cfg: DistillConfig | None = None
        self._never_trained: frozenset[str] | None = None
        mc = self.distill_config
        self.metric_names = ("num_masked", "correct") + tuple(
            f"{what}.{c}.{k}"
            for what in ("target", "pred")
            for c in range(mc.num_codebooks)
            for k in range(mc.codebook_size)
        )

    @staticmethod
    def check_config(cfg: Any) -> None:
        if cfg.data.train_units:
            raise ValueError(
                f"data.train_units: {cfg.model.kind} learns from its own teacher; give no units"
            )
        if cfg.run.fsdp:
            raise ValueError(
                f"run.fsdp: {cfg.model.kind} trains with DDP only (its EMA teacher and "
                "codebooks are not sharded); set run.fsdp = false"
            )
        if cfg.model.from_pretrained is None:
            model_config(cfg).backbone.check_frame_layout()

    @property
    def distill_config(self) -> DistillConfig:
        """The model config, its teacher schedule stretched to this run (ema_schedule_steps)."""
        if self._model_cfg is None:
            self._model_cfg = model_config(self.cfg).for_run(self.cfg.optim.max_steps)
            self._model_cfg.backbone.check_frame_layout()
        return self._model_cfg

    def build_model(self) -> nn.Module:
        model = DistillModel(self.distill_config)
        path = self.cfg.model.from_pretrained
        if path is not None:
            _, state = read_distill_checkpoint(path, kind=self.kind)
            model.load_state_dict(state)
            log.info("continued pretraining from %s", path)
        self._never_trained = frozenset(model.never_trained())
        return model

    @staticmethod
    def model_from_state(state: dict[str, Any]) -> nn.Module:
        model = DistillModel(DistillConfig.from_dict(state["model_config"], where="model_config"))
        model.load_state_dict(state["model"])
        return model

    def model_config(self, model: nn.Module) -> dict[str, Any]:
        return to_dict(model.cfg)

    def train_batches(self, *, rank: int, world_size: int, pin_memory: bool):
        # No units: the teacher gives the targets. Audio standardised as the models were trained.
        return pretraining_batches(
            self.cfg, self.cfg.mask, units=False, rank=rank, world_size=world_size,
            pin_memory=pin_memory, standardize=True,
        )  # fmt: skip

    def valid_batches(self, *, rank: int, world_size: int) -> ValidBatches | None:
        return pretraining_valid_batches(
            self.cfg, self.cfg.mask, units=False, rank=rank, world_size=world_size,
            standardize=True,
        )  # fmt: skip

    def normaliser(self, batch: Batch) -> int:
        return batch.num_masked

    def loss(self, model: nn.Module, batch: Batch, generator: torch.Generator) -> TaskLoss:
        out = model(batch.waveforms, batch.lengths, mask=batch.mask, layerdrop_generator=generator)
        sums = torch.cat([out.target_counts.flatten(), out.pred_sums.flatten()]).tolist()
        metrics: dict[str, torch.Tensor | float] = dict(
            zip(self.metric_names[2:], sums, strict=True)
        )
        metrics["num_masked"] = float(out.num_masked)
        metrics["correct"] = out.correct
        return TaskLoss(loss_sum=out.loss_sum, metrics=metrics)

    def before_step(self, model: nn.Module, step: int) -> None:
        model.codebooks.reset()  # a skipped step's statistics must not leak into this one

    def after_step(self, model: nn.Module, step: int) -> None:
        model.codebooks.apply_update()
        model.update_teacher(step)

    def trainable(self, name: str, step: int) -> bool:
        if self._never_trained is not None and name in self._never_trained:
            return False
        if name.startswith("teacher."):
            return False
        return super().trainable(name, step)

    def may_skip_parameters(self) -> bool:
        return super().may_skip_parameters() or self.distill_config.backbone.layerdrop > 0

    def summarize(self, totals: dict[str, float]) -> dict[str, float]:
        mc = self.distill_config
        masked = max(totals["num_masked"], 1.0)
        shape = (mc.num_codebooks, mc.codebook_size)
        target = torch.tensor([totals[n] for n in self.metric_names[2:] if n[0] == "t"])
        pred = torch.tensor([totals[n] for n in self.metric_names[2:] if n[0] == "p"])
        target_ppl = perplexity(target.view(shape) / masked)
        pred_ppl = perplexity(pred.view(shape) / masked)
        out = {
            "masked_acc": totals["correct"] / (masked * mc.num_codebooks),
            "masked_loss": totals["loss_sum"] / masked,
            "target_ppl": float(target_ppl.mean()),
            "pred_ppl": float(pred_ppl.mean()),
            "num_masked": int(totals["num_masked"]),
        }
        for layer, value in zip(mc.target_layers, target_ppl.tolist(), strict=True):
            out[f"target_ppl_layer{layer}"] = value
        for layer, value in zip(mc.target_layers, pred_ppl.tolist(), strict=True):
            out[f"pred_ppl_layer{layer}"] = value
        # Per codebook: a mean over codebooks hides one that collapsed beside healthy ones
        # (the tiny DinoSR's deepest codebooks fell to 1.0 while the mean stayed above 10).
        threshold = self.cfg.model.collapse_perplexity or mc.codebook_size / 16
        collapsed = [
            f"layer {layer}: {value:.1f}"
            for layer, value in zip(mc.target_layers, target_ppl.tolist(), strict=True)
            if value < threshold
        ]
        if totals["num_masked"] > 0 and collapsed:
            log.warning(
                "target perplexity below %.2f (of %d codewords): codebooks collapsing (%s)",
                threshold,
                mc.codebook_size,
                ", ".join(collapsed),
            )
        return out
