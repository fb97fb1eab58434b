"""Training forward+backward time of HuBERT-base on 2 x 4 s: ours vs transformers' HubertModel
with a cosine head, 100 and 500 units, fp32 and bf16 autocast. Measurements alternate between
the two models so that load from other processes hits both alike. Wall and CPU time are both
reported: on a shared machine CPU time measures the work, wall time also counts waiting. Last,
the GFLOP/s of one fp32 product through PyTorch's BLAS path and through models.linear (oneDNN).

    python benchmarks/bench_model.py [--reps 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from hubertlab.allocator import keep_freed_memory
from hubertlab.data.masking import compute_span_mask
from hubertlab.models.config import HubertConfig
from hubertlab.models.convert import hf_config_dict
from hubertlab.models.hubert import HubertModel
from hubertlab.models.linear import linear, uses_onednn

SAMPLES = 4 * 16000
BATCH = 2


class CosineHead(nn.Module):
    """The same head as ours, for transformers: cosine / 0.1 as one matrix product."""

    def __init__(self, dim: int, final_dim: int, num_units: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, final_dim)
        self.units = nn.Parameter(torch.randn(num_units, final_dim))

    def forward(self, x: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        proj = F.normalize(self.proj(x[mask]).float(), dim=-1)
        logits = proj @ F.normalize(self.units.float(), dim=-1).T / 0.1
        return F.cross_entropy(logits.float(), labels[mask], reduction="sum")


def build(num_units: int):
    import transformers

    cfg = HubertConfig.preset("base", num_units=(num_units,), layerdrop=0.0)
    torch.manual_seed(0)
    ours = HubertModel(cfg).train()
    hf_cfg = transformers.HubertConfig(**hf_config_dict(cfg), attn_implementation="sdpa")
    theirs = transformers.HubertModel(hf_cfg).train()
    head = CosineHead(cfg.backbone.hidden_dim, cfg.final_dim, num_units).train()
    return cfg, ours, theirs, head


def step_ours(model, waveforms, labels, mask) -> None:
    out = model(waveforms, labels=[labels], mask=mask)
    loss = out.loss_sum / out.num_masked + 10 * out.feature_penalty
    loss.backward()


def step_theirs_once(model, head, waveforms, labels, mask) -> None:
    """transformers has no feature penalty: its step does slightly less work than ours."""
    x = model(waveforms, mask_time_indices=mask).last_hidden_state
    loss = head(x, labels, mask) / mask.sum()
    loss.backward()


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(args, waveforms, g) -> list[tuple]:
    rows = []
    for num_units in args.units:
        cfg, ours, theirs, head = build(num_units)
        frames = int(ours.backbone.frame_lengths(SAMPLES))
        labels = torch.randint(0, num_units, (BATCH, frames), generator=g)
        mask = compute_span_mask(torch.full((BATCH,), frames), generator=g)
        for precision in ("fp32", "bf16"):
            bf16 = precision == "bf16"

            def run_ours(bf16=bf16, ours=ours, labels=labels, mask=mask):
                ours.zero_grad(set_to_none=True)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    step_ours(ours, waveforms, labels, mask)

            def run_theirs(bf16=bf16, theirs=theirs, head=head, labels=labels, mask=mask):
                theirs.zero_grad(set_to_none=True)
                head.zero_grad(set_to_none=True)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    step_theirs_once(theirs, head, waveforms, labels, mask)

            run_ours(), run_theirs()  # warm-up
            t_ours, t_theirs = [], []
            for _ in range(args.reps):
                t_ours.append(timed(run_ours))
                t_theirs.append(timed(run_theirs))
            medians = [
                statistics.median(t[i] for t in ts) for ts in (t_ours, t_theirs) for i in (0, 1)
            ]
            rows.append((num_units, precision, *medians))
            print(f"  measured {num_units} units {precision}", flush=True)
    return rows


def linear_throughput(reps: int) -> None:
    """GFLOP/s of HuBERT-base's fc1 product (398 frames x 768 -> 3072), forward: PyTorch's own
    fp32 path (BLAS) vs models.linear (oneDNN), the gap the model's Linear layers exploit."""
    g = torch.Generator().manual_seed(0)
    x, weight = torch.randn(398, 768, generator=g), torch.randn(3072, 768, generator=g)
    bias = torch.randn(3072, generator=g)
    flops = 2 * x.shape[0] * x.shape[1] * weight.shape[0]
    times: dict[str, list[float]] = {"F.linear (BLAS)": [], "models.linear (oneDNN)": []}
    for _ in range(reps + 1):  # the first round warms up and is dropped below
        for name, fn in zip(times, (F.linear, linear), strict=True):
            start = time.perf_counter()
            fn(x, weight, bias)
            times[name].append(time.perf_counter() - start)
    path = "oneDNN" if uses_onednn(x, weight) else "F.linear (no oneDNN in this build)"
    print(f"\nfc1 forward product, fp32, median of {reps} (models.linear takes: {path})")
    for name, ts in times.items():
        print(f"  {name:<24} {flops / statistics.median(ts[1:]) / 1e9:6.1f} GFLOP/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="1: the CPU is shared")
    parser.add_argument("--units", type=int, nargs="+", default=[100, 500])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as the training loop does (run.keep_freed_memory); both models gain
    g = torch.Generator().manual_seed(0)
    waveforms = torch.randn(BATCH, SAMPLES, generator=g)
    rows = measure(args, waveforms, g)
    audio_s = BATCH * SAMPLES / 16000
    print(
        f"\nHuBERT-base training forward+backward, {BATCH} x {SAMPLES / 16000:.0f} s, "
        f"{args.threads} thread(s), median of {args.reps}; seconds, ours vs transformers (hf)"
    )
    print(
        f"{'units':>5} {'precision':>9} {'ours wall':>9} {'hf wall':>8} {'ratio':>6} "
        f"{'ours CPU':>9} {'hf CPU':>7} {'ratio':>6} {'ours audio-s/CPU-s':>19}"
    )
    for num_units, precision, ours_wall, ours_cpu, hf_wall, hf_cpu in rows:
        print(
            f"{num_units:>5} {precision:>9} {ours_wall:>9.3f} {hf_wall:>8.3f} "
            f"{ours_wall / hf_wall:>6.2f} {ours_cpu:>9.3f} {hf_cpu:>7.3f} "
            f"{ours_cpu / hf_cpu:>6.2f} {audio_s / ours_cpu:>19.1f}"
        )
    for precision in ("fp32", "bf16"):
        cpu = {r[0]: r[3] for r in rows if r[1] == precision}
        if 100 in cpu and 500 in cpu:
            print(f"{precision}: ours 500 / 100 units (CPU time) = {cpu[500] / cpu[100]:.3f}")
    linear_throughput(reps=max(args.reps, 9))


if __name__ == "__main__":
    main()
