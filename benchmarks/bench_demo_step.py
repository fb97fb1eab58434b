"""Steps per second of the demo's tiny models (HuBERT and SpidR as `hubertlab demo` trains
them: 64-channel CNN, 4 x 256 Transformer, 8 x 3 s batches, bf16 autocast, fused AdamW), before
and after the speed work, in the same run.

The speed work, each change switched on in turn (every row adds one to the row above it):
- "before": torch's own pieces: F.dropout (one Mersenne-Twister draw per element on CPU), the
  positional conv by oneDNN's grouped convolution, GELU on the transposed view of the CNN's
  LayerNorm output (SpidR's CNN);
- "+dropout": the models' dropout (hubertlab.models.components.dropout: 16-bit slices of 64-bit
  random words);
- "+fft posconv": HuBERT's 128-tap positional conv through the FFT (models/fft_conv.py);
- "+cnn layout" (= after): the CNN's LayerNorm + GELU on contiguous memory both ways
  (components.layer_norm_gelu; HuBERT's CNN has no LayerNorm, so only SpidR changes).
Measurements alternate between the variants so that load from other processes hits them alike;
wall and CPU time are both printed (CPU time is the work done, steadier on a shared machine).

    python benchmarks/bench_demo_step.py [--reps 15] [--threads 2]
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
OURS = {
    "dropout": components.dropout,
    "fft_pays": components.fft_pays,
    "layer_norm_gelu": components.layer_norm_gelu,
}
TORCH = {
    "dropout": lambda x, p, training=True: F.dropout(x, p, training),
    "fft_pays": lambda batch, channels_per_group: False,
    "layer_norm_gelu": lambda x, norm: F.gelu(norm(x.transpose(1, 2)).transpose(1, 2)),
}
VARIANTS = {  # which of our pieces each variant uses; the rest are torch's
    "before": (),
    "+dropout": ("dropout",),
    "+fft posconv": ("dropout", "fft_pays"),
    "+cnn layout": ("dropout", "fft_pays", "layer_norm_gelu"),
}


def use_variant(name: str) -> None:
    for piece in OURS:
        setattr(components, piece, (OURS if piece in VARIANTS[name] else TORCH)[piece])


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
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as the training loop does
    print(
        f"demo training step ({BATCH} x {SAMPLES / 16000:.0f} s, bf16, {args.threads} threads), "
        f"median of {args.reps}"
    )
    print(f"{'model':<8}{'variant':<15}{'wall s':>8}{'CPU s':>8}{'steps/s':>9}")
    for kind in ("hubert", "spidr"):
        step = make_step(kind)
        times = {name: ([], []) for name in VARIANTS}
        for name in VARIANTS:  # warm-up: allocator, oneDNN kernels, optimizer state
            use_variant(name)
            step(), step()
        for _ in range(args.reps):
            for name in VARIANTS:
                use_variant(name)
                wall, cpu = time.perf_counter(), time.process_time()
                step()
                times[name][0].append(time.perf_counter() - wall)
                times[name][1].append(time.process_time() - cpu)
        use_variant("+cnn layout")
        medians = {n: (statistics.median(w), statistics.median(c)) for n, (w, c) in times.items()}
        for name, (wall, cpu) in medians.items():
            print(f"{kind:<8}{name:<15}{wall:>8.3f}{cpu:>8.3f}{1 / wall:>9.2f}")
        before, after = medians["before"], medians["+cnn layout"]
        print(
            f"{kind:<8}speed-up {before[0] / after[0]:.2f}x wall, "
            f"{before[1] / after[1]:.2f}x CPU (before -> after)"
        )


if __name__ == "__main__":
    main()
