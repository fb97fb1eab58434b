"""Training objectives, one module each, and the one table from a name to its task.

A task class declares the names it answers to (`names`: `[model] kind` for pretraining,
`[finetune] task` for fine-tuning, with a display name); nothing outside tasks/ compares those
names: callers look the class up here and ask it (`needs_units`, `predicts`, `exports_to`...).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hubertlab.tasks.ctc import CtcTask
from hubertlab.tasks.hubert import HubertTask
from hubertlab.tasks.spidr import DistillTask
from hubertlab.tasks.vtc import VtcTask


def _by_name(*classes: type) -> dict[str, type]:
    return {name: cls for cls in classes for name in cls.names}


# `[model] kind` -> task; the first is the default (and what a checkpoint without a model_kind,
# written before there was one, holds).
PRETRAINING: dict[str, type] = _by_name(HubertTask, DistillTask)
# `[finetune] task` -> task.
FINETUNING: dict[str, type] = _by_name(VtcTask, CtcTask)
TASKS: dict[str, type] = {**PRETRAINING, **FINETUNING}
DEFAULT_KIND = next(iter(PRETRAINING))
PRETRAINING_KINDS = tuple(PRETRAINING)
FINETUNING_KINDS = tuple(FINETUNING)


def task_class(name: str) -> Any:
    """The Task class of `[model] kind` or `[finetune] task` `name`."""
    if name not in TASKS:
        raise ValueError(f"model.kind: unknown objective {name!r} (known: {', '.join(TASKS)})")
    return TASKS[name]


def display_name(name: str) -> str:
    """How reports write task `name` ("HuBERT", "SpidR"...)."""
    return task_class(name).names[name]


def pretraining_kind(model_table: Mapping[str, Any] | None) -> str:
    """The `kind` of a [model] table as read from TOML (the default when it names none)."""
    return (model_table or {}).get("kind", DEFAULT_KIND)


def checkpoint_task(state: Mapping[str, Any]) -> Any:
    """The Task class of one of our training checkpoints (a torch.load'ed dict)."""
    return task_class(state.get("model_kind", DEFAULT_KIND))


def config_task(cfg: Any) -> str:
    """The task a TrainConfig ([model] kind) or a FinetuneConfig ([finetune] task) trains."""
    return cfg.finetune.task if hasattr(cfg, "finetune") else cfg.model.kind


def build_task(cfg: Any) -> Any:
    """The task a TrainConfig asks for (its [model] kind), or a FinetuneConfig (its
    [finetune] task)."""
    return task_class(config_task(cfg))(cfg)
