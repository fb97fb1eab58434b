"""The contract between the training loop and an objective.

The loop (hubertlab.train.loop) owns steps, ranks, precision, the optimizer, checkpoints,
validation and logging; a task owns what a batch means and how it becomes a loss: it builds
the model and its data, turns a batch into a TaskLoss, and may act after each optimizer step
(an EMA teacher) or keep parameters frozen for a while. Every count in a TaskLoss is a sum,
so the loop can add micro-batches and ranks without knowing what they count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from hubertlab.data.dataset import Batch


@dataclass
class TaskLoss:
    """One micro-batch's loss, as sums the loop can reduce across micro-batches and ranks.

    The step's loss is  sum(loss_sum) / sum(normaliser) + mean(mean_loss)  over micro-batches
    and ranks: loss_sum is summed over whatever the task's normaliser counts (masked frames,
    frames, utterances), mean_loss is already a per-batch mean (HuBERT's weighted feature
    penalty). `metrics` holds the task's sums (names fixed by Task.metric_names)."""

    loss_sum: torch.Tensor
    mean_loss: torch.Tensor | float = 0.0
    metrics: dict[str, torch.Tensor | float] = field(default_factory=dict)


class Batches(Protocol):
    """Endless training batches of one rank that know how far they got (for checkpoints)."""

    def __iter__(self) -> Iterator[Batch]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Task(Protocol):
    """What the training loop calls, and what callers ask a task instead of testing its name.
    TaskBase gives the usual defaults."""

    # The `[model] kind` / `[finetune] task` values this class trains, with their display names
    # (hubertlab.tasks maps them to the class).
    names: ClassVar[dict[str, str]]
    needs_units: ClassVar[bool]  # trains on k-means units ([data] train_units)
    predicts: ClassVar[str | None]  # what `hubertlab predict` writes: "rttm", "transcripts"
    exports_to: ClassVar[tuple[str, ...]]  # `hubertlab export --to` of its checkpoints
    metric_names: tuple[str, ...]  # keys of TaskLoss.metrics, in a fixed order

    @staticmethod
    def check_config(cfg: Any) -> None:
        """Raise ValueError (naming the key) for what this task needs of its config and did
        not get; called when the config is read, before any work."""

    def build_model(self) -> nn.Module:
        """A fresh model (or one continued from pretrained weights), on the CPU."""

    @staticmethod
    def model_from_state(state: dict[str, Any]) -> nn.Module:
        """The model of one of this task's training checkpoints (a torch.load'ed dict)."""

    def model_config(self, model: nn.Module) -> dict[str, Any]:
        """What a checkpoint keeps to rebuild `model` (JSON-able)."""

    def train_batches(self, *, rank: int, world_size: int, pin_memory: bool) -> Batches: ...

    def valid_batches(self, *, rank: int, world_size: int) -> Iterable[Batch] | None: ...

    def normaliser(self, batch: Batch) -> int:
        """How many things this batch's loss_sum sums over; known before any forward."""

    def loss(self, model: nn.Module, batch: Batch, generator: torch.Generator) -> TaskLoss:
        """Forward `batch` (already on the model's device). `generator` is seeded identically
        on every rank for the step and micro-batch (layerdrop must agree across ranks)."""

    def summarize(self, totals: dict[str, float]) -> dict[str, float]:
        """Readable metrics (accuracies...) from summed metrics over batches and ranks."""

    def before_step(self, model: nn.Module, step: int) -> None:
        """Called before the micro-batches of update `step` (0-based), applied or not."""

    def after_step(self, model: nn.Module, step: int) -> None:
        """Called after each applied optimizer step; `step` counts applied updates (1-based)."""

    def trainable(self, name: str, step: int) -> bool:
        """Whether parameter `name` trains in update `step` (0-based)."""

    def may_skip_parameters(self) -> bool:
        """Whether some parameters can go without a gradient in a step (layerdrop, frozen
        parts): DDP must then look for unused parameters."""

    def fsdp_units(self, model: nn.Module) -> list[nn.Module]:
        """Submodules FSDP shards one by one (the Transformer layers)."""

    def after_training(self, best: Path, load_model: Callable[[Path], nn.Module]) -> dict[str, Any]:
        """Called once, on the main process, after the last step, with the run's best
        checkpoint and how to read its model; returns what to add to the run's summary."""


class TaskBase:
    """Defaults for a task over a Backbone-based model: nothing after a step, the CNN frozen
    from model.freeze_cnn_from_step, only `head_prefixes` trained for model.head_only_steps."""

    names: ClassVar[dict[str, str]] = {}
    needs_units: ClassVar[bool] = False
    predicts: ClassVar[str | None] = None
    exports_to: ClassVar[tuple[str, ...]] = ()
    metric_names: tuple[str, ...] = ()
    head_prefixes: tuple[str, ...] = ()
    cnn_prefixes: tuple[str, ...] = ("backbone.cnn.",)

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    @staticmethod
    def check_config(cfg: Any) -> None:
        return None

    def after_training(self, best: Path, load_model: Callable[[Path], nn.Module]) -> dict[str, Any]:
        return {}

    def before_step(self, model: nn.Module, step: int) -> None:
        return None

    def after_step(self, model: nn.Module, step: int) -> None:
        return None

    def trainable(self, name: str, step: int) -> bool:
        model_cfg = self.cfg.model
        if step < model_cfg.head_only_steps and not name.startswith(self.head_prefixes):
            return False
        freeze_from = model_cfg.freeze_cnn_from_step
        return not (
            freeze_from is not None and step >= freeze_from and name.startswith(self.cnn_prefixes)
        )

    def may_skip_parameters(self) -> bool:
        model_cfg = self.cfg.model
        return model_cfg.freeze_cnn_from_step is not None or model_cfg.head_only_steps > 0

    def fsdp_units(self, model: nn.Module) -> list[nn.Module]:
        return list(model.backbone.encoder.layers)

    def summarize(self, totals: dict[str, float]) -> dict[str, float]:
        return {}


def apply_trainable(model: nn.Module, task: Task, step: int) -> bool:
    """Set requires_grad of every parameter as the task wants it for `step`; True if any
    changed. Frozen parameters get no gradient, so AdamW leaves them (and their moments) be."""
    changed = False
    for name, param in model.named_parameters():
        wanted = task.trainable(name, step)
        if param.requires_grad != wanted:
            param.requires_grad_(wanted)
            changed = True
    return changed
