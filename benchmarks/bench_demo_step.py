"""Steps per second of the demo's tiny models (HuBERT and SpidR as `hubertlab demo` trains
them: 64-channel CNN, 4 x 256 Transformer, 8 x 3 s batches, bf16 autocast, fused AdamW), before
and after the speed work, in the same run.

"before" is the same step with torch's own dropout (F.dropout: one Mersenne-Twister draw per
element on CPU), "after" is the models' dropout (hubertlab.models.components.dropout: 16-bit
slices of 64-bit random words). Measurements alternate between the variants so that load from
other processes hits them alike; wall and CPU time are both printed (CPU time is the work done,
steadier on a shared machine).

    python benchmarks/bench_demo_step.py [--reps 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from hubertlab.allocator import keep_freed_memory
from hubertlab.config import OptimSection
from hubertlab.data.dataset import Batch
from hubertlab.data.masking import compute_span_mask
from hubertlab.init.step_time import cpu_training_step
from hubertlab.models import components
from hubertlab.tasks import build_task
from hubertlab.train.config import train_config_from_dict
from hubertlab.train.optim import build_optimizer

BATCH, SAMPLES, NUM_UNITS = 8, 48_000, 100  # the demo's batch_seconds 24 of 3 s crops
DEMO_CNN = [64] * 7
OURS_DROPOUT = components.dropout


def torch_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    return F.dropout(x, p, training)


def demo_batch(frames: int) -> Batch:
    g = torch.Generator().manual_seed(0)
    mask = compute_span_mask(
        torch.full((BATCH,), frames),
        mask_prob=0.8,
        mask_length=10,
        min_masks=2,
        generator=g,
        num_frames=frames,
    )
    return Batch(
        waveforms=0.1 * torch.randn(BATCH, SAMPLES, generator=g),
        lengths=torch.full((BATCH,), SAMPLES),
        frame_lengths=torch.full((BATCH,), frames),
        labels=[torch.randint(0, NUM_UNITS, (BATCH, frames), generator=g)],
        mask=mask,
    )


def make_step(kind: str) -> Callable[[], None]:
    """One training step of the demo's `kind` model: forward, backward, clip, AdamW (and for
    SpidR the teacher EMA and codebook update the task does)."""
    model_table = {"kind": kind, "preset": "tiny", "overrides": {"conv_channels": DEMO_CNN}}
    data = {"train_manifest": "-", "min_crop_seconds": 1.0, "max_crop_seconds": 3.0}
    if kind == "hubert":
        data |= {"train_units": ["-"], "num_units": [NUM_UNITS]}
    else:
        del model_table["overrides"]  # the tiny SpidR preset has the demo's CNN already
    cfg = train_config_from_dict({"model": model_table, "data": data, "run": {"out_dir": "-"}})
    task = build_task(cfg)
    torch.manual_seed(0)
    model = task.build_model().train()
    optimizer = build_optimizer(model, OptimSection(lr=1e-4, warmup_steps=0), fused=True)
    batch = demo_batch(int(model.backbone.frame_lengths(SAMPLES)))
    state = {"step": 0}

    def step() -> None:
        state["step"] += 1
        cpu_training_step(task, model, optimizer, batch, state["step"])

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as the training loop does
    variants = {"before": torch_dropout, "after": OURS_DROPOUT}
    print(
        f"demo training step ({BATCH} x {SAMPLES / 16000:.0f} s, bf16, {args.threads} threads), "
        f"median of {args.reps}"
    )
    print(f"{'model':<8}{'variant':<9}{'wall s':>8}{'CPU s':>8}{'steps/s':>9}")
    for kind in ("hubert", "spidr"):
        step = make_step(kind)
        times = {name: ([], []) for name in variants}
        for fn in variants.values():  # warm-up: allocator, oneDNN kernels, optimizer state
            components.dropout = fn
            step(), step()
        for _ in range(args.reps):
            for name, fn in variants.items():
                components.dropout = fn
                wall, cpu = time.perf_counter(), time.process_time()
                step()
                times[name][0].append(time.perf_counter() - wall)
                times[name][1].append(time.process_time() - cpu)
        components.dropout = OURS_DROPOUT
        medians = {n: (statistics.median(w), statistics.median(c)) for n, (w, c) in times.items()}
        for name, (wall, cpu) in medians.items():
            print(f"{kind:<8}{name:<9}{wall:>8.3f}{cpu:>8.3f}{1 / wall:>9.2f}")
        ratio = medians["before"][0] / medians["after"][0]
        cpu_ratio = medians["before"][1] / medians["after"][1]
        print(f"{kind:<8}speed-up {ratio:.2f}x wall, {cpu_ratio:.2f}x CPU")


if __name__ == "__main__":
    main()
