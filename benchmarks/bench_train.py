"""Audio-seconds per second of a full HuBERT-base training step on this machine (forward,
backward, gradient clipping, AdamW step), fp32 and bf16 autocast, on 2 x 4 s, 100 units.

Ours runs the training loop's own pieces (the HuBERT task's loss through forward_loss, the
loss scaling of train/loop.py, build_optimizer); beside it, transformers' HubertModel + a cosine
head + AdamW (both AdamW fused, as the loop uses it). Measurements alternate between
configurations so that load from other processes hits all of them alike.

    python benchmarks/bench_train.py [--reps 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

# The transformers-side head is the model benchmark's (same folder, run as a script).
from bench_model import CosineHead  # noqa: E402

from hubertlab.allocator import keep_freed_memory
from hubertlab.config import OptimSection
from hubertlab.data.dataset import Batch
from hubertlab.data.masking import MaskConfig
from hubertlab.init.step_time import cpu_training_step
from hubertlab.models.config import HubertConfig
from hubertlab.models.convert import hf_config_dict
from hubertlab.tasks import build_task
from hubertlab.train.config import train_config_from_dict
from hubertlab.train.optim import build_optimizer

SECONDS, BATCH, NUM_UNITS = 4.0, 2, 100
SAMPLES = int(SECONDS * 16000)


def make_ours(batch: Batch):
    cfg = train_config_from_dict(
        {
            "model": {"preset": "base", "overrides": {"layerdrop": 0.0}},
            "data": {"train_manifest": "-", "train_units": ["-"], "num_units": [NUM_UNITS]},
            "run": {"out_dir": "-"},
        }
    )
    task = build_task(cfg)
    model = task.build_model().train()
    optimizer = build_optimizer(model, OptimSection(lr=1e-5, warmup_steps=0), fused=True)

    def step(bf16: bool) -> None:
        cpu_training_step(task, model, optimizer, batch, 1, bf16=bf16)  # HuBERT: no after-step

    return step


def make_theirs(cfg: HubertConfig, batch: Batch):
    import transformers

    hf_cfg = transformers.HubertConfig(**hf_config_dict(cfg), attn_implementation="sdpa")
    model = transformers.HubertModel(hf_cfg).train()
    head = CosineHead(cfg.backbone.hidden_dim, cfg.final_dim, NUM_UNITS).train()
    params = list(model.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(
        params, lr=1e-5, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01, fused=True
    )
    mask, labels = batch.mask, batch.labels[0]

    def step(bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            x = model(batch.waveforms, mask_time_indices=mask).last_hidden_state
            loss = head(x, labels, mask) / mask.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-transformers", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as the training loop does (run.keep_freed_memory); both models gain
    torch.manual_seed(0)
    cfg = HubertConfig.preset("base", num_units=(NUM_UNITS,), layerdrop=0.0)
    g = torch.Generator().manual_seed(0)
    frames = (SAMPLES - 400) // 320 + 1
    mask = MaskConfig().draw(torch.full((BATCH,), frames), torch.Generator().manual_seed(1), frames)
    batch = Batch(
        waveforms=0.1 * torch.randn(BATCH, SAMPLES, generator=g),
        lengths=torch.full((BATCH,), SAMPLES),
        frame_lengths=torch.full((BATCH,), frames),
        labels=[torch.randint(0, NUM_UNITS, (BATCH, frames), generator=g)],
        mask=mask,
    )
    steps = {"hubertlab": make_ours(batch)}
    if not args.no_transformers:
        steps["transformers"] = make_theirs(cfg, batch)
    configs = [(name, precision) for precision in ("fp32", "bf16") for name in steps]
    times: dict[tuple[str, str], list[float]] = {c: [] for c in configs}
    for name, precision in configs:  # warm-up: allocator, oneDNN kernels, optimizer state
        steps[name](precision == "bf16")
    for _ in range(args.reps):
        for name, precision in configs:
            start = time.perf_counter()
            steps[name](precision == "bf16")
            times[(name, precision)].append(time.perf_counter() - start)
    audio = BATCH * SECONDS
    print(
        f"HuBERT-base full training step (AdamW included), {BATCH} x {SECONDS:.0f} s, "
        f"{NUM_UNITS} units, {args.threads} threads, median of {args.reps}"
    )
    print(f"{'model':<14}{'precision':<11}{'s/step':>9}{'audio-s/s':>11}")
    for name, precision in configs:
        median = statistics.median(times[(name, precision)])
        print(f"{name:<14}{precision:<11}{median:>9.3f}{audio / median:>11.2f}")
    ours = {p: audio / statistics.median(times[("hubertlab", p)]) for p in ("fp32", "bf16")}
    ok = ours["fp32"] >= 5.5 and ours["bf16"] >= 15
    print(f"targets (fp32 >= 5.5, bf16 >= 15 audio-s/s): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
