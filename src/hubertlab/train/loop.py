"""The training loop: train(cfg, task), readable top to bottom, for every objective.

The loop owns steps, ranks, precision, the optimizer, checkpoints, validation and logging; the
task (hubertlab.tasks) owns the model, its data and its loss. One step = grad_accum
micro-batches on every rank, and its loss is
    sum over ranks and micro-batches of loss_sum / (the normaliser of all of them)
    + the mean over them of mean_loss,
so the gradient does not depend on how the global batch is split across ranks and micro-steps.
A step whose loss or gradient is not finite is skipped (and counted); too many in a row stop the
run. Checkpoints hold everything a resume needs: a killed run restarted with the same config
continues bit-identically from its latest checkpoint.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from hubertlab.allocator import keep_freed_memory
from hubertlab.config import to_dict
from hubertlab.constants import SAMPLE_RATE
from hubertlab.fileio import atomic_write_json, remove_stale_temps
from hubertlab.tasks import build_task
from hubertlab.tasks.base import Task, apply_trainable
from hubertlab.train import checkpoint as ckpt
from hubertlab.train.config import TrainConfig
from hubertlab.train.distributed import (
    DistInfo,
    all_reduce_sum,
    setup_distributed,
    sync_gradients,
    teardown_distributed,
    wrap_model,
)
from hubertlab.train.loggers import open_loggers
from hubertlab.train.metrics import MetricsLog, plot_losses
from hubertlab.train.optim import build_optimizer, lr_at, set_lr
from hubertlab.train.validate import Totals, evaluate, forward_loss, model_from_checkpoint

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """What the loop carries from step to step (and keeps in checkpoints)."""

    step: int = 0
    counters: dict[str, float] = field(
        default_factory=lambda: {
            "nonfinite_skipped": 0,
            "corrupt_skipped": 0,
            "audio_seconds": 0.0,
            "best_valid_loss": math.inf,
        }
    )
    nonfinite_in_a_row: int = 0


def train(cfg: TrainConfig, task: Task | None = None) -> dict[str, Any]:
    """Train (or resume) the run in cfg.run.out_dir with `task` (default: the one the config
    names), then let the task act on its best checkpoint (Task.after_training: VTC tunes its
    thresholds); returns a summary of the last step."""
    task = task if task is not None else build_task(cfg)
    info = setup_distributed(cfg.run.device)
    try:
        result = _train(cfg, task, info)
    finally:
        teardown_distributed()
    if info.is_main:
        best = ckpt.best_checkpoint(Path(cfg.run.out_dir) / "checkpoints")
        result.update(task.after_training(best, model_from_checkpoint))
    return result


def _train(cfg: TrainConfig, task: Task, info: DistInfo) -> dict[str, Any]:
    run, max_steps = cfg.run, cfg.optim.max_steps
    ckpt_dir = Path(run.out_dir) / "checkpoints"
    _prepare_process(cfg)
    raw_model, model, optimizer = _build_model(cfg, task, info)
    train_batches = task.train_batches(
        rank=info.rank, world_size=info.world_size, pin_memory=info.device.type == "cuda"
    )
    valid_batches = task.valid_batches(rank=info.rank, world_size=info.world_size)
    progress = _resume(ckpt_dir, raw_model, optimizer, train_batches, cfg, info)
    if run.compile:
        model = torch.compile(model)
    metrics = _open_metrics(cfg, task, raw_model, progress, info)
    if progress.step == 0 and run.keep_every > 0:
        # The learning curve's origin: the model before any step (random init, or the model
        # it continues), so ABX over checkpoints shows what training itself added.
        _save(ckpt_dir, raw_model, optimizer, train_batches, progress, cfg, task, info)
    bar = _progress_bar(progress.step, max_steps, enabled=info.is_main and run.progress_bar)

    batches = iter(train_batches)
    window, window_start = Totals(task.metric_names), time.perf_counter()
    summary: dict[str, Any] = {}
    while progress.step < max_steps:
        step = progress.step
        lr = lr_at(step, cfg.optim)
        set_lr(optimizer, lr)
        apply_trainable(raw_model, task, step)
        task.before_step(raw_model, step)
        micro = [next(batches) for _ in range(cfg.optim.grad_accum)]
        totals, grad_norm = _forward_backward(cfg, task, model, raw_model, micro, step, info)
        if _apply_step(optimizer, totals, grad_norm, progress, cfg, task, raw_model):
            window.add(totals)
        optimizer.zero_grad(set_to_none=True)
        progress.step += 1
        progress.counters["audio_seconds"] += totals["audio_samples"] / SAMPLE_RATE
        progress.counters["corrupt_skipped"] += int(totals["skipped"])
        bar.update(1)

        final = progress.step == max_steps
        if progress.step % run.log_every == 0 or final:
            seconds = time.perf_counter() - window_start
            summary = _log_window(window, seconds, task, lr, grad_norm, progress, metrics)
            bar.set_postfix(loss=f"{summary['loss']:.3f}", lr=f"{lr:.2e}")
            window, window_start = Totals(task.metric_names), time.perf_counter()
        improved = False
        if valid_batches is not None and (
            (run.valid_every and progress.step % run.valid_every == 0) or final
        ):
            summary["valid"], improved = _validate(
                model, raw_model, valid_batches, task, cfg, info, progress, metrics
            )
        if progress.step % run.ckpt_every == 0 or final or improved:
            _save(ckpt_dir, raw_model, optimizer, train_batches, progress, cfg, task, info,
                  best=improved)  # fmt: skip
    bar.close()
    return _finish(cfg, metrics, progress, info, summary)


def _prepare_process(cfg: TrainConfig) -> None:
    if cfg.run.num_threads:
        torch.set_num_threads(cfg.run.num_threads)
    if cfg.run.keep_freed_memory:
        keep_freed_memory()


def _build_model(cfg: TrainConfig, task: Task, info: DistInfo):
    """The same initial weights on every rank, wrapped for DDP/FSDP, and its optimizer.
    Every parameter still requires a gradient when DDP registers them: a part frozen now (and
    trained later) must be part of the gradient reduction from the start."""
    torch.manual_seed(cfg.run.seed)
    raw_model = task.build_model().to(info.device)
    model = wrap_model(
        raw_model,
        info,
        fsdp=cfg.run.fsdp,
        shard_units=task.fsdp_units(raw_model) if cfg.run.fsdp else [],
        find_unused_parameters=task.may_skip_parameters(),
    )
    # The fused AdamW kernel is several times faster on CPU as well (not tried with CPU FSDP).
    fused = info.device.type == "cuda" or not cfg.run.fsdp
    return raw_model, model, build_optimizer(raw_model, cfg.optim, fused=fused)


def _resume(ckpt_dir: Path, raw_model, optimizer, train_batches, cfg, info) -> Progress:
    """Restore the latest intact checkpoint of this run (model, optimizer, data position, RNG,
    counters); a fresh Progress when there is none."""
    loaded = ckpt.load_latest_intact(ckpt_dir)
    if loaded is None:
        torch.manual_seed(cfg.run.seed + info.rank)  # dropout differs across ranks
        return Progress()
    path, state = loaded
    ckpt.load_model_and_optimizer_state(
        raw_model, optimizer, state["model"], state["optimizer"], fsdp=cfg.run.fsdp
    )
    train_batches.load_state_dict(state["sampler"][info.rank % len(state["sampler"])])
    progress = Progress(step=int(state["step"]), counters=dict(state["counters"]))
    rngs = state["rng"]
    if len(rngs) == info.world_size:
        ckpt.set_rng_state(rngs[info.rank])
    else:  # another number of ranks: fresh dropout streams, still seeded
        torch.manual_seed(cfg.run.seed + 1000 * progress.step + info.rank)
        log.warning(
            "resuming %d ranks from a checkpoint of %d: the data order of this epoch is "
            "approximate",
            info.world_size,
            len(rngs),
        )
    if info.is_main:
        log.info("resumed from %s (step %d)", path, progress.step)
    return progress


def _open_metrics(cfg, task, raw_model, progress: Progress, info: DistInfo) -> MetricsLog | None:
    if not info.is_main:
        return None
    out_dir = Path(cfg.run.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Only rank 0 writes this run's checkpoints, and not yet: any temp file there is stale.
    remove_stale_temps(out_dir / "checkpoints", older_than_s=0)
    atomic_write_json(
        out_dir / "config.json", {"train": to_dict(cfg), "model": task.model_config(raw_model)}
    )
    num_params = sum(p.numel() for p in raw_model.parameters())
    log.info("%.2fM parameters, %d rank(s) on %s", num_params / 1e6, info.world_size, info.device)
    loggers = open_loggers(cfg.run, resume_step=progress.step, config=to_dict(cfg))
    return MetricsLog(out_dir / "metrics.jsonl", resume_step=progress.step, loggers=loggers)


def _forward_backward(cfg, task: Task, model, raw_model, micro, step: int, info: DistInfo):
    """Forward and backward every micro-batch of the step; returns the step's Totals, reduced
    over ranks, and the (clipped) gradient norm."""
    # The normaliser of the whole step on all ranks, known before any forward pass.
    local_norm = torch.tensor([float(sum(task.normaliser(b) for b in micro if b.real))])
    global_norm = max(float(all_reduce_sum(local_norm, info).item()), 1.0)
    # DDP and FSDP average gradients over ranks: scale by world_size to get their sum.
    scale = info.world_size / global_norm
    totals = Totals(task.metric_names)
    for i, batch in enumerate(micro):
        gen = torch.Generator().manual_seed(_seed(cfg.run.seed, step, i))
        with sync_gradients(model, enabled=i == len(micro) - 1, fsdp=cfg.run.fsdp):
            out = forward_loss(task, model, batch, info.device, bf16=_bf16(cfg), generator=gen)
            loss = out.loss_sum * scale + out.mean_loss / len(micro)
            (loss if batch.real else loss * 0.0).backward()
        totals.add_output(out, batch, task)
    max_norm = cfg.optim.clip_grad_norm or math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), max_norm)
    grad_norm = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
    return totals.all_reduce(info), grad_norm


def _apply_step(optimizer, totals, grad_norm: float, progress: Progress, cfg, task, raw_model):
    """Take the optimizer step if the loss and gradient are finite, then the task's after-step
    work; else count the skip (and stop after too many in a row). True if applied."""
    loss = totals.loss()
    if math.isfinite(loss) and math.isfinite(grad_norm):
        optimizer.step()
        task.after_step(raw_model, progress.step + 1)
        progress.nonfinite_in_a_row = 0
        return True
    progress.counters["nonfinite_skipped"] += 1
    progress.nonfinite_in_a_row += 1
    log.warning(
        "step %d: non-finite loss or gradient (loss %s, grad norm %s): skipped",
        progress.step,
        loss,
        grad_norm,
    )
    limit = cfg.run.max_nonfinite_in_a_row
    if progress.nonfinite_in_a_row >= limit:
        raise FloatingPointError(
            f"{progress.nonfinite_in_a_row} steps in a row had a non-finite loss or gradient "
            f"(last at step {progress.step}); lower optim.lr or check the data "
            f"(run.max_nonfinite_in_a_row = {limit})"
        )
    return False


def _log_window(window: Totals, seconds: float, task, lr, grad_norm, progress, metrics):
    """The metrics of the steps since the last log line, written to metrics.jsonl."""
    summary = window.summarize(task)
    summary.update(
        lr=lr,
        grad_norm=grad_norm,
        audio_s_per_s=window["audio_samples"] / SAMPLE_RATE / max(seconds, 1e-9),
        nonfinite_skipped=progress.counters["nonfinite_skipped"],
        corrupt_skipped=progress.counters["corrupt_skipped"],
    )
    if metrics is not None:
        metrics.write(progress.step, "train", summary)
    return summary


def _validate(model, raw_model, valid_batches, task, cfg, info, progress, metrics):
    """Validation metrics (all ranks together) and whether the loss is the best so far (kept
    in the counters)."""
    valid = evaluate(
        model if cfg.run.fsdp else raw_model, valid_batches, task, info=info, bf16=_bf16(cfg)
    )
    improved = valid["loss"] < progress.counters["best_valid_loss"]
    progress.counters["best_valid_loss"] = min(valid["loss"], progress.counters["best_valid_loss"])
    if metrics is not None:
        metrics.write(progress.step, "valid", valid)
    if info.is_main:
        log.info("step %d: valid %s", progress.step, _short(valid))
    return valid, improved


def _finish(cfg, metrics, progress: Progress, info: DistInfo, summary: dict) -> dict[str, Any]:
    out_dir = Path(cfg.run.out_dir)
    if metrics is not None:
        metrics.close()
        plot_losses(out_dir / "metrics.jsonl", out_dir / "loss.png")
    last = ckpt.latest_checkpoint(out_dir / "checkpoints")
    return {
        "step": progress.step,
        "rank": info.rank,
        "checkpoint": str(last) if last is not None else None,
        **progress.counters,
        **summary,
    }


def _save(ckpt_dir, raw_model, optimizer, train_batches, progress: Progress, cfg, task, info,
          *, best: bool = False) -> None:  # fmt: skip
    """Rank 0 writes the checkpoint (atomically); every rank contributes its RNG and data
    position (and, with FSDP, its shards)."""
    model_state, optim_state = ckpt.model_and_optimizer_state(
        raw_model, optimizer, fsdp=cfg.run.fsdp
    )
    per_rank = ckpt.gather_per_rank(
        {"rng": ckpt.rng_state(), "sampler": train_batches.state_dict()}, info
    )
    if info.is_main:
        path = ckpt.checkpoint_path(ckpt_dir, progress.step)
        state = {
            "model": model_state,
            "model_kind": getattr(task, "kind", type(task).__name__),
            "model_config": task.model_config(raw_model),
            "optimizer": optim_state,
            "step": progress.step,
            "sampler": [r["sampler"] for r in per_rank],
            "rng": [r["rng"] for r in per_rank],
            "counters": progress.counters,
            "train_config": to_dict(cfg),
        }
        ckpt.save_checkpoint(path, state)
        if best:
            ckpt.write_best(ckpt_dir, progress.step, progress.counters["best_valid_loss"])
        ckpt.prune_checkpoints(ckpt_dir, cfg.run.keep_last, cfg.run.keep_every)
        plot_losses(Path(cfg.run.out_dir) / "metrics.jsonl", Path(cfg.run.out_dir) / "loss.png")
        log.info("saved %s", path)
    ckpt.barrier(info)


def _bf16(cfg: TrainConfig) -> bool:
    return cfg.run.precision == "bf16"


def _short(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float))


def _seed(*values: int) -> int:
    return int(np.random.SeedSequence(list(values)).generate_state(1)[0])


def _progress_bar(step: int, total: int, *, enabled: bool):
    return tqdm(
        total=total,
        initial=step,
        disable=not enabled,
        dynamic_ncols=True,
        mininterval=1.0,
        desc="train",
        unit="step",
    )
