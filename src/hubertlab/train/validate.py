"""Validation: the task's loss and metrics over the validation batches, during training or over
saved checkpoints; the sums (Totals) the loop and validation share."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from hubertlab.data.dataset import Batch
from hubertlab.fileio import atomic_open
from hubertlab.tasks import DEFAULT_KIND, build_task, checkpoint_task, config_task
from hubertlab.tasks.base import Task, TaskLoss
from hubertlab.train.checkpoint import list_checkpoints, load_checkpoint
from hubertlab.train.config import TrainConfig
from hubertlab.train.distributed import DistInfo, all_reduce_sum

log = logging.getLogger(__name__)


class Totals:
    """Sums over micro-batches, steps and ranks: the loop's own (loss_sum, normaliser,
    mean_loss, batches, audio_samples, skipped) then the task's metrics, in one float64 vector
    so a single collective reduces them all."""

    LOOP_KEYS = ("loss_sum", "normaliser", "mean_loss", "batches", "audio_samples", "skipped")

    def __init__(self, metric_names: tuple[str, ...]) -> None:
        self.names = self.LOOP_KEYS + tuple(metric_names)
        self.values = torch.zeros(len(self.names), dtype=torch.float64)

    def __getitem__(self, name: str) -> float:
        return float(self.values[self.names.index(name)])

    def add_output(self, out: TaskLoss, batch: Batch, task: Task) -> None:
        """Add one forward's sums (a stand-in or a padding-only batch adds only its skips)."""
        self.values[self.names.index("skipped")] += batch.num_skipped
        if not (batch.real and batch.count):
            return
        loop = [
            out.loss_sum.detach().float(),
            float(task.normaliser(batch)),
            out.mean_loss.detach().float() if torch.is_tensor(out.mean_loss) else out.mean_loss,
            1.0,
            float(batch.lengths.sum()),
            0.0,
        ]
        task_sums = [out.metrics[name] for name in self.names[len(self.LOOP_KEYS) :]]
        values = [v.detach().float().cpu() if torch.is_tensor(v) else float(v) for v in loop]
        values += [v.detach().float().cpu() if torch.is_tensor(v) else float(v) for v in task_sums]
        self.values += torch.tensor([float(v) for v in values], dtype=torch.float64)

    def add(self, other: Totals) -> None:
        self.values += other.values

    def all_reduce(self, info: DistInfo | None) -> Totals:
        if info is not None:
            all_reduce_sum(self.values, info)
        return self

    def loss(self) -> float:
        """The loss as the loop defines it (see hubertlab.train.loop)."""
        return self["loss_sum"] / max(self["normaliser"], 1.0) + self["mean_loss"] / max(
            self["batches"], 1.0
        )

    def summarize(self, task: Task) -> dict[str, Any]:
        totals = dict(zip(self.names, self.values.tolist(), strict=True))
        return {"loss": self.loss(), **task.summarize(totals)}


def forward_loss(
    task: Task,
    model: torch.nn.Module,
    batch: Batch,
    device: torch.device,
    *,
    bf16: bool,
    generator: torch.Generator | None = None,
) -> TaskLoss:
    """The task's loss on `batch`, moved to `device`, under bf16 autocast when asked."""
    batch = batch.to(device, non_blocking=True)
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        return task.loss(model, batch, generator)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    batches: Iterable[Batch],
    task: Task,
    *,
    info: DistInfo | None = None,
    bf16: bool = False,
) -> dict[str, Any]:
    """Metrics over all validation batches (all ranks together); dropout and layerdrop off."""
    device = next(model.parameters()).device if info is None else info.device
    was_training = model.training
    model.eval()
    totals = Totals(task.metric_names)
    for batch in batches:
        totals.add_output(forward_loss(task, model, batch, device, bf16=bf16), batch, task)
    model.train(was_training)
    return totals.all_reduce(info).summarize(task)


def model_from_checkpoint(path: str | Path, state: dict[str, Any] | None = None) -> torch.nn.Module:
    """The model of one of our training checkpoints (weights_only load), whatever its task;
    `state` is the checkpoint's content when the caller has read it already."""
    state = load_checkpoint(path) if state is None else state
    if "model" not in state or "model_config" not in state:
        raise ValueError(f"{path}: not a hubertlab training checkpoint (no model/model_config)")
    try:
        return checkpoint_task(state).model_from_state(state)
    except (KeyError, RuntimeError) as e:
        raise ValueError(f"{path}: the checkpoint does not fit its model: {e}") from None


def check_checkpoint_fits(
    state: dict[str, Any], path: Path, task: Task, kind: str, config: str
) -> None:
    """Refuse a checkpoint of another task than the config's, or (fine-tuning) with other
    outputs: its model would be scored on data it was not trained for (a VTC run validated
    as CTC gave a CER), or fail deep inside the task with a TypeError."""
    found = state.get("model_kind", DEFAULT_KIND)  # checkpoints before model_kind: HuBERT's
    if found != kind:
        raise ValueError(
            f"{path}: a {found!r} checkpoint, but {config} is a {kind!r} config; validate "
            "it with the config of its own run"
        )
    outputs = (state.get("model_config") or {}).get("outputs")
    if outputs is not None and hasattr(task, "outputs"):
        wanted = tuple(task.outputs())
        if tuple(outputs) != wanted:
            raise ValueError(
                f"{path}: its head has the outputs {list(outputs)[:8]}, {config} gives "
                f"{list(wanted)[:8]}; validate it with the config of its own run"
            )


def validate_checkpoints(
    ckpt_dir: str | Path,
    cfg: TrainConfig,
    out_path: str | Path | None = None,
    *,
    device: torch.device | None = None,
    config_name: str = "the config",
) -> list[dict[str, Any]]:
    """Validate every step_*.pt in `ckpt_dir` (or its checkpoints/ folder) on the config's
    validation set; write one JSON line per checkpoint to `out_path` (default:
    ckpt_dir/validation.jsonl), the lowest loss marked "best": true. A checkpoint that cannot
    be read is reported (with its error) and the others are scored; a checkpoint of another
    task (or head) than the config's stops it (check_checkpoint_fits). `cfg` is a TrainConfig
    or a FinetuneConfig (its dev set); `config_name` names it in errors."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        raise FileNotFoundError(f"checkpoint folder not found: {ckpt_dir}")
    if not list_checkpoints(ckpt_dir) and (ckpt_dir / "checkpoints").is_dir():
        ckpt_dir = ckpt_dir / "checkpoints"
    found = list_checkpoints(ckpt_dir)
    if not found:
        raise FileNotFoundError(f"{ckpt_dir}: no step_*.pt checkpoints")
    if getattr(cfg.data, "valid_manifest", None) is None and not hasattr(cfg, "finetune"):
        raise ValueError("data.valid_manifest: the config names no validation set")
    device = device or torch.device("cpu")
    task = build_task(cfg)
    batches = task.valid_batches(rank=0, world_size=1)
    records: list[dict[str, Any]] = []
    kind = config_task(cfg)
    for step, path in found:
        try:
            state = load_checkpoint(path)
        except (ValueError, OSError) as e:
            log.error("%s: cannot be read, skipped: %s", path, e)
            records.append({"checkpoint": path.name, "step": step, "error": str(e)})
            continue
        check_checkpoint_fits(state, path, task, kind, config_name)
        try:
            model = model_from_checkpoint(path, state).to(device)
        except (ValueError, OSError, RuntimeError) as e:
            log.error("%s: cannot be read, skipped: %s", path, e)
            records.append({"checkpoint": path.name, "step": step, "error": str(e)})
            continue
        metrics = evaluate(model, batches, task, bf16=cfg.run.precision == "bf16")
        records.append({"checkpoint": path.name, "step": step, **metrics})
        log.info("%s: loss %.4f", path.name, metrics["loss"])
    scored = [i for i, r in enumerate(records) if "loss" in r]
    if not scored:
        raise ValueError(f"{ckpt_dir}: no checkpoint could be read ({records[0]['error']})")
    best = min(scored, key=lambda i: records[i]["loss"])
    for i, record in enumerate(records):
        record["best"] = i == best
    out_path = Path(out_path) if out_path is not None else ckpt_dir / "validation.jsonl"
    with atomic_open(out_path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    return records
