"""The wall time of one training step of the tiny CPU recipe, measured on this machine now:
`hubertlab init` bases its CPU estimate on it, since CPUs (and their load) differ by an order
of magnitude (REFERENCE 9: absolute CPU figures do not carry over)."""

from __future__ import annotations

import statistics
import time

import torch

from hubertlab.config import OptimSection
from hubertlab.data.dataset import Batch
from hubertlab.data.masking import compute_span_mask
from hubertlab.tasks import PRETRAINING, build_task
from hubertlab.train.config import train_config_from_dict
from hubertlab.train.optim import build_optimizer
from hubertlab.train.validate import forward_loss

NUM_UNITS = 100


def _batch(num_crops: int, num_samples: int, frames: int) -> Batch:
    g = torch.Generator().manual_seed(0)
    mask = compute_span_mask(
        torch.full((num_crops,), frames), mask_prob=0.8, mask_length=10, min_masks=2,
        generator=g, num_frames=frames,
    )  # fmt: skip
    return Batch(
        waveforms=0.1 * torch.randn(num_crops, num_samples, generator=g),  # (batch, samples)
        lengths=torch.full((num_crops,), num_samples),
        frame_lengths=torch.full((num_crops,), frames),
        labels=[torch.randint(0, NUM_UNITS, (num_crops, frames), generator=g)],
        mask=mask,
    )


def measure_step_seconds(
    kind: str, model_table: dict, *, batch_seconds: float, crop_seconds: float, reps: int = 2
) -> float:
    """Median wall time of `reps` steps (after one warm-up step) of model `kind` built from
    [train.model] `model_table` on batch_seconds / crop_seconds random crops: forward and
    backward in bf16 autocast, clipping, AdamW, and the task's after-step work."""
    data = {"train_manifest": "-", "min_crop_seconds": crop_seconds,
            "max_crop_seconds": crop_seconds, "batch_seconds": batch_seconds}  # fmt: skip
    if PRETRAINING[kind].needs_units:
        data |= {"train_units": ["-"], "num_units": [NUM_UNITS]}
    cfg = train_config_from_dict(
        {"model": {"kind": kind, **model_table}, "data": data, "run": {"out_dir": "-"}}
    )
    task = build_task(cfg)
    model = task.build_model().train()
    optimizer = build_optimizer(model, OptimSection(lr=1e-4, warmup_steps=0))
    num_samples = cfg.data.max_samples
    batch = _batch(int(batch_seconds // crop_seconds), num_samples,
                   int(model.backbone.frame_lengths(num_samples)))  # fmt: skip
    times = []
    for step in range(reps + 1):
        start = time.perf_counter()
        cpu_training_step(task, model, optimizer, batch, step + 1)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])  # the first step pays for allocations and kernels


def cpu_training_step(task, model, optimizer, batch, step: int, *, bf16: bool = True) -> None:
    """One training step on the CPU as the loop takes it: forward and backward (bf16
    autocast unless told), clipping at 10, the optimizer, and the task's after-step work
    (SpidR: teacher EMA, codebooks). Shared by the estimate and the step benchmarks."""
    out = forward_loss(task, model, batch, torch.device("cpu"), bf16=bf16)
    loss = out.loss_sum / task.normaliser(batch) + out.mean_loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    task.after_step(model, step)
