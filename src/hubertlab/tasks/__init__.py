"""Training objectives, one module each; `task_class(kind)` maps `[model] kind` to its task."""

from __future__ import annotations

from typing import Any


def task_class(kind: str) -> Any:
    """The Task class of `[model] kind` (imported only when asked for)."""
    if kind == "hubert":
        from hubertlab.tasks.hubert import HubertTask

        return HubertTask
    if kind in ("spidr", "dinosr"):
        from hubertlab.tasks.spidr import DistillTask

        return DistillTask
    if kind == "vtc":
        from hubertlab.tasks.vtc import VtcTask

        return VtcTask
    if kind == "ctc":
        from hubertlab.tasks.ctc import CtcTask

        return CtcTask
    raise ValueError(
        f"model.kind: unknown objective {kind!r} (known: hubert, spidr, dinosr, vtc, ctc)"
    )


def build_task(cfg: Any) -> Any:
    """The task a TrainConfig asks for (its [model] kind), or a FinetuneConfig (its
    [finetune] task)."""
    if hasattr(cfg, "finetune"):
        return task_class(cfg.finetune.task)(cfg)
    return task_class(cfg.model.kind)(cfg)
