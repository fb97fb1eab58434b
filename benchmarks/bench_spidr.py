"""One SpidR-base training step on 2 x 4 s (forward, backward, AdamW step, codebook update and
teacher EMA): ours vs the spidr package's model, fp32 and bf16 autocast, in the same run.
Measurements alternate between the two models so that load from other processes hits both
alike; wall and CPU time are both reported (CPU time measures the work on a shared machine).

    python benchmarks/bench_spidr.py [--reps 5] [--threads 1] [--seconds 4]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from hubertlab.allocator import keep_freed_memory
from hubertlab.data.masking import compute_span_mask
from hubertlab.models.spidr import DistillModel
from hubertlab.models.spidr_config import DistillConfig
from hubertlab.models.spidr_keys import spidr_to_ours

BATCH = 2


def build():
    from spidr.config import SpidRConfig
    from spidr.models import SpidR

    torch.manual_seed(0)
    theirs = SpidR(SpidRConfig()).train()
    ours = DistillModel(DistillConfig.preset("spidr", "base")).train()
    ours.load_state_dict(spidr_to_ours(theirs.state_dict()))  # the same weights
    return ours, theirs


def optimizer(model: torch.nn.Module) -> torch.optim.AdamW:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=1e-5, betas=(0.9, 0.95), eps=1e-6, fused=True)


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(args, waveforms: torch.Tensor, mask: torch.Tensor) -> list[tuple]:
    ours, theirs = build()
    index = mask.nonzero()[:, 1].view(BATCH, -1)  # theirs: (batch, masked) frame indices
    opt_ours, opt_theirs = optimizer(ours), optimizer(theirs)
    steps = {"ours": 0, "theirs": 0}
    rows = []
    for precision in ("fp32", "bf16"):
        bf16 = precision == "bf16"

        def run_ours(bf16=bf16):
            opt_ours.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = ours(waveforms, mask=mask)
            (out.loss_sum / out.num_masked).backward()
            opt_ours.step()
            steps["ours"] += 1
            ours.codebooks.apply_update()
            ours.update_teacher(steps["ours"])

        def run_theirs(bf16=bf16):
            opt_theirs.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                losses, _ = theirs(waveforms, mask_indices=index)
            losses.mean().backward()
            opt_theirs.step()  # their codebooks moved inside the forward
            steps["theirs"] += 1
            theirs.update_ema(steps["theirs"])

        run_ours(), run_theirs()  # warm-up
        t_ours, t_theirs = [], []
        for _ in range(args.reps):
            t_ours.append(timed(run_ours))
            t_theirs.append(timed(run_theirs))
        medians = [statistics.median(t[i] for t in ts) for ts in (t_ours, t_theirs) for i in (0, 1)]
        rows.append((precision, *medians))
        print(f"  measured {precision}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="1: the CPU is shared")
    parser.add_argument("--seconds", type=float, default=4.0, help="audio per row")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as the training loop does (run.keep_freed_memory); both gain
    samples = int(args.seconds * 16000)
    g = torch.Generator().manual_seed(0)
    waveforms = torch.randn(BATCH, samples, generator=g)
    frames = int(
        DistillModel(DistillConfig.preset("spidr", "tiny")).backbone.frame_lengths(samples)
    )
    # One span mask for both rows: the spidr package needs as many masked frames in each.
    row_mask = compute_span_mask(torch.tensor([frames]), generator=g)
    mask = row_mask.expand(BATCH, -1).contiguous()
    rows = measure(args, waveforms, mask)
    audio_s = BATCH * args.seconds
    print(
        f"\nSpidR-base training step (fwd + bwd + AdamW + codebooks + EMA), {BATCH} x "
        f"{args.seconds:g} s, {args.threads} thread(s), median of {args.reps}; seconds"
    )
    print(
        f"{'precision':>9} {'ours wall':>9} {'spidr wall':>10} {'ratio':>6} "
        f"{'ours CPU':>9} {'spidr CPU':>9} {'ratio':>6} {'ours audio-s/CPU-s':>19}"
    )
    for precision, ours_wall, ours_cpu, their_wall, their_cpu in rows:
        print(
            f"{precision:>9} {ours_wall:>9.3f} {their_wall:>10.3f} {ours_wall / their_wall:>6.2f} "
            f"{ours_cpu:>9.3f} {their_cpu:>9.3f} {ours_cpu / their_cpu:>6.2f} "
            f"{audio_s / ours_cpu:>19.2f}"
        )


if __name__ == "__main__":
    main()
