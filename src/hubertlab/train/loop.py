"""Masked-prediction pretraining: train(cfg), readable top to bottom.

One step = grad_accum micro-batches on every rank. The loss of a step is
    sum over ranks and micro-batches of loss_sum / (masked frames of all of them)
    + feature_penalty_weight * mean feature penalty,
so the gradient does not depend on how the global batch is split across ranks and micro-steps.
A step whose loss or gradient is not finite is skipped (and counted); too many in a row stop
the run. Checkpoints hold everything a resume needs: a killed run restarted with the same
config continues bit-identically from its latest checkpoint.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from hubertlab.allocator import keep_freed_memory
from hubertlab.config import to_dict
from hubertlab.constants import SAMPLE_RATE, num_frames
from hubertlab.fileio import atomic_write_json
from hubertlab.train import checkpoint as ckpt
from hubertlab.train.config import TrainConfig
from hubertlab.train.data import ValidBatches, build_train_loader
from hubertlab.train.launch import (
    DistInfo,
    all_reduce_sum,
    setup_distributed,
    sync_gradients,
    teardown_distributed,
    wrap_model,
)
from hubertlab.train.metrics import MetricsLog, plot_losses
from hubertlab.train.optim import build_optimizer, lr_at, set_lr
from hubertlab.train.validate import TOTALS, evaluate, model_forward, output_totals, summarize

log = logging.getLogger(__name__)


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train (or resume) the run in cfg.run.out_dir; returns a summary of the last step."""
    info = setup_distributed(cfg.run.device)
    try:
        return _train(cfg, info)
    finally:
        teardown_distributed()


def _train(cfg: TrainConfig, info: DistInfo) -> dict[str, Any]:
    run, optim_cfg, device = cfg.run, cfg.optim, info.device
    out_dir, ckpt_dir = Path(run.out_dir), Path(run.out_dir) / "checkpoints"
    bf16 = run.precision == "bf16"
    if run.num_threads:
        torch.set_num_threads(run.num_threads)
    if run.keep_freed_memory:
        keep_freed_memory()

    # ---- model: the same initial weights on every rank
    torch.manual_seed(run.seed)
    raw_model = build_model(cfg).to(device)
    model_cfg = raw_model.cfg
    model = wrap_model(raw_model, info, fsdp=run.fsdp)
    # The fused AdamW kernel is several times faster on CPU as well (not tried with CPU FSDP).
    fused = device.type == "cuda" or not run.fsdp
    optimizer = build_optimizer(raw_model, optim_cfg, fused=fused)

    # ---- data
    train_batches = build_train_loader(
        cfg.data,
        model_cfg,
        seed=run.seed,
        rank=info.rank,
        world_size=info.world_size,
        pin_memory=device.type == "cuda",
    )
    valid_batches = None
    if cfg.data.valid_manifest is not None:
        valid_batches = ValidBatches(
            cfg.data.valid_manifest,
            cfg.data.valid_units,
            cfg.data,
            model_cfg,
            rank=info.rank,
            world_size=info.world_size,
        )

    # ---- resume from the latest checkpoint of this run, if any
    step = 0
    counters = {
        "nonfinite_skipped": 0,
        "corrupt_skipped": 0,
        "audio_seconds": 0.0,
        "best_valid_loss": math.inf,
    }
    latest = ckpt.latest_checkpoint(ckpt_dir)
    if latest is not None:
        state = ckpt.load_checkpoint(latest)
        ckpt.load_model_and_optimizer_state(
            raw_model, optimizer, state["model"], state["optimizer"], fsdp=run.fsdp
        )
        train_batches.load_state_dict(state["sampler"][info.rank % len(state["sampler"])])
        step, counters = int(state["step"]), dict(state["counters"])
        rngs = state["rng"]
        if len(rngs) == info.world_size:
            ckpt.set_rng_state(rngs[info.rank])
        else:  # another number of ranks: fresh dropout streams, still seeded
            torch.manual_seed(run.seed + 1000 * step + info.rank)
            log.warning(
                "resuming %d ranks from a checkpoint of %d: the data order of this epoch "
                "is approximate",
                info.world_size,
                len(rngs),
            )
        if info.is_main:
            log.info("resumed from %s (step %d)", latest, step)
        del state
    else:
        torch.manual_seed(run.seed + info.rank)  # dropout differs across ranks
    if run.compile:
        model = torch.compile(model)

    metrics = None
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(
            out_dir / "config.json", {"train": to_dict(cfg), "model": to_dict(model_cfg)}
        )
        metrics = MetricsLog(
            out_dir / "metrics.jsonl",
            resume_step=step,
            tensorboard_dir=out_dir / "tensorboard" if run.tensorboard else None,
        )
        num_params = sum(p.numel() for p in raw_model.parameters())
        log.info(
            "%.2fM parameters, %d train files, %d rank(s) on %s",
            num_params / 1e6,
            len(train_batches.dataset),
            info.world_size,
            device,
        )
    progress = _progress_bar(step, optim_cfg.max_steps, enabled=info.is_main and run.progress_bar)

    # ---- the loop
    batches = iter(train_batches)
    window = torch.zeros(len(TOTALS) + 2, dtype=torch.float64)
    window_start, nonfinite_in_a_row = time.perf_counter(), 0
    summary: dict[str, Any] = {}
    while step < optim_cfg.max_steps:
        lr = lr_at(step, optim_cfg)
        set_lr(optimizer, lr)
        micro = [next(batches) for _ in range(optim_cfg.grad_accum)]
        # Masked frames of the whole step on all ranks: the loss normaliser, known up front.
        masked = torch.tensor([float(sum(b.get("num_masked", 0) for b in micro))])
        expected_masked = int(all_reduce_sum(masked, info).item())
        global_masked = float(max(expected_masked, 1))

        # DDP and FSDP average gradients over ranks: scale by world_size to get their sum.
        loss_scale = info.world_size / global_masked
        penalty_weight = model_cfg.feature_penalty_weight / len(micro)
        local = torch.zeros(len(TOTALS) + 2, dtype=torch.float64)
        for i, batch in enumerate(micro):
            real = batch["size"] > 0
            local[-1] += batch["num_skipped"]
            if not real:  # every file failed to decode: a weightless stand-in keeps ranks in step
                batch = _stand_in_batch(cfg.data.min_samples, len(model_cfg.num_units))
            layerdrop_gen = torch.Generator().manual_seed(_seed(run.seed, step, i))
            with sync_gradients(model, enabled=i == len(micro) - 1, fsdp=run.fsdp):
                out = model_forward(
                    model, batch, device, bf16=bf16, layerdrop_generator=layerdrop_gen
                )
                loss = out.loss_sum * loss_scale + penalty_weight * out.feature_penalty
                (loss if real else loss * 0.0).backward()
            if real:
                local[: len(TOTALS)] += torch.tensor(output_totals(out), dtype=torch.float64)
                local[-2] += float(batch["lengths"].sum())
        max_norm = optim_cfg.clip_grad_norm or math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), max_norm)
        grad_norm = float(
            grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
        )
        totals = all_reduce_sum(local, info)
        if int(totals[1]) != expected_masked:
            raise RuntimeError(
                f"step {step}: the model masked {int(totals[1])} frames, the data pipeline "
                f"predicted {expected_masked}: hubertlab.data.masking and the model disagree"
            )
        step_metrics = summarize(
            totals[: len(TOTALS)].tolist(),
            feature_penalty_weight=model_cfg.feature_penalty_weight,
            num_unit_sets=len(model_cfg.num_units),
        )
        if math.isfinite(step_metrics["loss"]) and math.isfinite(grad_norm):
            optimizer.step()
            nonfinite_in_a_row = 0
            window += totals
        else:
            counters["nonfinite_skipped"] += 1
            nonfinite_in_a_row += 1
            log.warning(
                "step %d: non-finite loss or gradient (loss %s, grad norm %s): skipped",
                step,
                step_metrics["loss"],
                grad_norm,
            )
            if nonfinite_in_a_row >= run.max_nonfinite_in_a_row:
                raise FloatingPointError(
                    f"{nonfinite_in_a_row} steps in a row had a non-finite loss or gradient "
                    f"(last at step {step}); lower optim.lr or check the data "
                    f"(run.max_nonfinite_in_a_row = {run.max_nonfinite_in_a_row})"
                )
        optimizer.zero_grad(set_to_none=True)
        step += 1
        counters["audio_seconds"] += float(totals[-2]) / SAMPLE_RATE
        counters["corrupt_skipped"] += int(totals[-1])
        progress.update(1)

        # ---- log, validate, checkpoint
        if step % run.log_every == 0 or step == optim_cfg.max_steps:
            elapsed = time.perf_counter() - window_start
            summary = summarize(
                window[: len(TOTALS)].tolist(),
                feature_penalty_weight=model_cfg.feature_penalty_weight,
                num_unit_sets=len(model_cfg.num_units),
            )
            summary.update(
                lr=lr,
                grad_norm=grad_norm,
                audio_s_per_s=float(window[-2]) / SAMPLE_RATE / max(elapsed, 1e-9),
                nonfinite_skipped=counters["nonfinite_skipped"],
                corrupt_skipped=counters["corrupt_skipped"],
            )
            if metrics is not None:
                metrics.write(step, "train", summary)
            progress.set_postfix(
                loss=f"{summary['loss']:.3f}",
                lr=f"{lr:.2e}",
                audio_s_per_s=f"{summary['audio_s_per_s']:.1f}",
            )
            window.zero_()
            window_start = time.perf_counter()
        improved = False
        final = step == optim_cfg.max_steps
        if valid_batches is not None and (
            (run.valid_every and step % run.valid_every == 0) or final
        ):
            valid = evaluate(
                model if run.fsdp else raw_model,
                valid_batches,
                model_cfg=model_cfg,
                device=device,
                bf16=bf16,
                dist_info=info,
            )
            improved = valid["loss"] < counters["best_valid_loss"]
            counters["best_valid_loss"] = min(valid["loss"], counters["best_valid_loss"])
            summary["valid"] = valid
            if metrics is not None:
                metrics.write(step, "valid", valid)
            if info.is_main:
                log.info(
                    "step %d: valid loss %.4f, masked acc %.3f, unmasked acc %.3f",
                    step,
                    valid["loss"],
                    valid["masked_acc"],
                    valid["unmasked_acc"],
                )
        if step % run.ckpt_every == 0 or final or improved:
            _save(
                ckpt_dir,
                step,
                raw_model,
                optimizer,
                train_batches,
                counters,
                cfg,
                info,
                best=improved,
            )
    progress.close()
    if metrics is not None:
        metrics.close()
        plot_losses(out_dir / "metrics.jsonl", out_dir / "loss.png")
    last = ckpt.latest_checkpoint(ckpt_dir)
    last_path = str(last) if last is not None else None
    return {"step": step, "rank": info.rank, "checkpoint": last_path, **counters, **summary}


def build_model(cfg: TrainConfig) -> torch.nn.Module:
    """A fresh model from the preset, or continued pretraining from model.from_pretrained
    (any checkpoint hubertlab.models.checkpoint reads): the backbone is kept; the head too if
    it fits the unit counts, else it starts fresh. The optimizer always starts fresh."""
    from hubertlab.models.config import HubertConfig
    from hubertlab.models.hubert import HubertModel

    overrides = {**cfg.model.overrides, "num_units": list(cfg.data.num_units)}
    if cfg.model.from_pretrained is None:
        return HubertModel(HubertConfig.from_dict({"preset": cfg.model.preset, **overrides}))
    from hubertlab.models import checkpoint as model_checkpoint

    path = cfg.model.from_pretrained
    pretrained_cfg, state = model_checkpoint.read_checkpoint(path)
    model_cfg = HubertConfig.from_dict({**to_dict(pretrained_cfg), **overrides})
    keep_head = not cfg.model.new_head and model_cfg.num_units == pretrained_cfg.num_units
    model = model_checkpoint.build_model(model_cfg, state, keep_head=keep_head, where=str(path))
    log.info(
        "continued pretraining from %s (%s)",
        path,
        "head kept" if keep_head else f"new head for {model_cfg.num_units} units",
    )
    return model


def _save(
    ckpt_dir: Path,
    step: int,
    raw_model: torch.nn.Module,
    optimizer,
    train_batches,
    counters: dict,
    cfg: TrainConfig,
    info: DistInfo,
    *,
    best: bool = False,
) -> None:
    """Rank 0 writes the checkpoint (atomically); every rank contributes its RNG and sampler
    state (and, with FSDP, its shards)."""
    model_state, optim_state = ckpt.model_and_optimizer_state(
        raw_model, optimizer, fsdp=cfg.run.fsdp
    )
    per_rank = {"rng": ckpt.rng_state(), "sampler": train_batches.state_dict()}
    gathered = [per_rank]
    if info.distributed:
        gathered = [None] * info.world_size
        dist.all_gather_object(gathered, per_rank)
    if info.is_main:
        path = ckpt.checkpoint_path(ckpt_dir, step)
        ckpt.save_checkpoint(
            path,
            {
                "model": model_state,
                "model_config": to_dict(raw_model.cfg),
                "optimizer": optim_state,
                "step": step,
                "sampler": [g["sampler"] for g in gathered],
                "rng": [g["rng"] for g in gathered],
                "counters": counters,
                "train_config": to_dict(cfg),
            },
        )
        if best:
            ckpt.write_best(ckpt_dir, step, counters["best_valid_loss"])
        ckpt.prune_checkpoints(ckpt_dir, cfg.run.keep_last)
        plot_losses(Path(cfg.run.out_dir) / "metrics.jsonl", Path(cfg.run.out_dir) / "loss.png")
        log.info("saved %s", path)
    if info.distributed:
        dist.barrier()


def _stand_in_batch(num_samples: int, num_sets: int) -> dict[str, Any]:
    """One silent item with every label ignored (-1)."""
    frames = num_frames(num_samples)
    return {
        "size": 1,
        "waveforms": torch.zeros(1, num_samples),
        "lengths": torch.tensor([num_samples]),
        "mask_seed": 0,
        "labels": [torch.full((1, frames), -1, dtype=torch.long) for _ in range(num_sets)],
    }


def _seed(*values: int) -> int:
    return int(np.random.SeedSequence(list(values)).generate_state(1)[0])


def _progress_bar(step: int, total: int, *, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=step,
        disable=not enabled,
        dynamic_ncols=True,
        mininterval=1.0,
        desc="train",
        unit="step",
    )
