"""How `hubertlab init` sizes a run: a pure function (plan_run) from the corpus hours and the
hardware to the model, batch, steps, k, iterations and executor, each choice with the recipe
it comes from (Plan.why holds the reason of each, written beside it in the config).

| choice | CPU (no GPU) | GPUs (per GPU) | recipe |
|---|---|---|---|
| model | tiny, 64-channel CNN | base (95M) | demo / HuBERT base, BabyHuBERT |
| batch | 8 x 3 s = 24 s | 87.5 s (HuBERT), 237.5 s (SpidR, DinoSR) | demo / HuBERT base / spidr |
| steps, HuBERT | (1700, 1000) x min(1, h / 0.5 h) | (250k, 400k) x min(1, passes) | demo / HuBERT |
| steps, SpidR/DinoSR | 2300 x min(1, h / 0.5 h) | 400k x min(1, passes) | demo / spidr |
| k | 100, 100 | 100, then 500 from 10 h (else 100) | HuBERT base / demo |
| layer of iteration 2 | 3 of 4 | 6 of 12 | demo / HuBERT base |
| lr, schedule | 1e-3 cosine; SpidR 5e-4 | 5e-4 linear, 8% warm-up; SpidR tri-stage | demo / spidr |
| k-means fit | 10% of frames, >= 200 per cluster | same | fairseq HuBERT |
| validation | 5% of files, at most ~1 h | same | - |
| executor | local, a shard per core | local (1 GPU), or SLURM: a shard per 10 h | - |
| --init-from | 1 epoch head only + 4 epochs, lr 5e-5 constant, clip 1 | same | UPS |

At least 50 steps on a CPU, 1000 on GPUs, 16 SLURM shards. "passes": the recipe's passes over
its 960 h at our batch, steps = recipe steps x (h / 960) x (recipe audio per update / ours), so
a smaller corpus or batch gets fewer steps, never more than the recipe's. A local run trains
on one GPU (one process); several GPUs and nodes need --slurm.

The recipes (REFERENCE.md sections 3, 7.1, 7.2, 7.3, 11):
- HuBERT base on LibriSpeech 960 h: 87.5 s of audio per GPU x 32 GPUs = 2,800 s per update,
  250k updates in iteration 1 and 400k in iteration 2, k = 100 (MFCC) then 500 (layer 6),
  lr 5e-4, 8% warm-up (32k of 400k), linear decay, crops 2-15.625 s.
- BabyHuBERT (13k h of long-form audio, 32 H100): 175 s per GPU, 400k steps, bf16; k = 500.
- SpidR / DinoSR: 237.5 s per GPU x 16 GPUs, 400k steps, AdamW (0.9, 0.95), tri-stage lr,
  CNN frozen from step 200k.
- UPS continued pretraining: from a pretrained HuBERT with a new 100-unit head, one epoch of
  the head only, then 4 epochs at lr 5e-5, constant after 500 warm-up steps, clip 1.0.
- The demo (`hubertlab demo`, 30 min of audio on a 2-core CPU): the tiny preset with 64 CNN
  channels, 8 x 3 s crops, lr 1e-3 cosine, 1700 + 1000 steps, k = 100 twice, layer 3."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hubertlab.tasks import DEFAULT_KIND, PRETRAINING

SECONDS_PER_HOUR = 3600.0

# The HuBERT base recipe (fairseq, LibriSpeech 960 h).
BASE_HOURS = 960.0
BASE_UPDATE_SECONDS = 87.5 * 32  # audio per update, all GPUs together
BASE_STEPS = (250_000, 400_000)
# The SpidR recipe (LibriSpeech 960 h, 16 GPUs).
SPIDR_UPDATE_SECONDS = 237.5 * 16
SPIDR_STEPS = 400_000
# The demo on CPU: 30 min of audio, 3000 steps of 24 s (40 passes), then 1000 steps; the
# distilling models 2300 steps (demo/recipe.py DemoSettings).
DEMO_HOURS = 0.5
DEMO_STEPS = (3000, 1000)
DEMO_DISTILL_STEPS = 2300
DEMO_BATCH_SECONDS = 24.0
# Fewer steps than this learn nothing worth a report (the demo's curves move after ~100).
MIN_CPU_STEPS = 50
MIN_GPU_STEPS = 1000
# k-means fits on 10% of the training frames (50 per second); 500 clusters need >= 10 h for
# ~360 frames per cluster in the fit (fewer: k = 100, as the demo).
K500_MIN_HOURS = 10.0

# k-means fits on this fraction of the training frames (fairseq: ~10%), more when that would
# leave fewer than ~200 frames (at 50 Hz) per cluster: the demo's fit (10% of 30 min at 100 Hz,
# k = 100) has 180.
KMEANS_FRACTION = 0.1
KMEANS_FRAMES_PER_CLUSTER = 200
FRAMES_PER_SECOND = 50

# Wall-time anchors. CPU: `hubertlab init` measures the tiny step on the machine itself
# (init/step_time.py); without a measurement, the demo's step on the quiet 2-core machine
# of 2026-11-29 (README: 0.30 s HuBERT, 0.36 s SpidR/DinoSR, a whole run). The same step took
# 7.3 s on the loaded 2-core machine of 2026-12-07: figures from another CPU are no estimate.
# GPU: no measurement of ours, the public H100 claim (SpidR ~1,760 audio-s per GPU-s,
# REFERENCE 9): a lower bound on the training time.
CPU_STEP_SECONDS_UNITS = 0.30  # HuBERT (predicts units)
CPU_STEP_SECONDS_DISTILL = 0.36  # SpidR, DinoSR (an EMA teacher and codebooks besides)
GPU_AUDIO_SECONDS_PER_SECOND = 1760.0
# CPU work besides training steps, per iteration (measured on the loaded 2-core machine,
# 2026-12-07: MFCC features 5.8 s + k-means 0.1 s + units 9.9 s for 0.03 h): shard processes,
# k-means and export (fixed), MFCC features and units (per hour of audio); a model's layer
# features and the validations are forward passes, ~1/3 of a training step per batch.
CPU_FIXED_SECONDS = 60.0
CPU_MFCC_SECONDS_PER_HOUR = 600.0
FORWARD_FRACTION = 1 / 3
# Long-form recordings ([longform]): silero-vad on one core, ~50 s per hour of audio measured
# on the loaded 2-core machine (2026-12-07, 6 min of the long-form demo in 5 s of CPU).
CPU_VAD_SECONDS_PER_HOUR = 60.0
VALIDATIONS = 5  # valid_every = a quarter of the steps, and one at the end
# ABX per layer and PNMI on the synthetic evaluation corpus (10 min), per iteration, in
# training steps of the same machine (a forward pass over 10 min, ~8 layers of DTW).
EVAL_STEPS = 200
MARGIN = 1.25  # estimates are upper bounds for the same machine and load


@dataclass(frozen=True)
class Hardware:
    """What the run may use: GPUs per node (0: the CPU), nodes, and SLURM or this machine."""

    gpus_per_node: int = 0
    nodes: int = 1
    slurm: bool = False
    partition: str = ""
    account: str = ""

    def __post_init__(self) -> None:
        if self.gpus_per_node < 0:
            raise ValueError(f"--gpus: must be >= 0, got {self.gpus_per_node}")
        if self.nodes < 1:
            raise ValueError(f"--nodes: must be >= 1, got {self.nodes}")
        if self.nodes > 1 and not self.slurm:
            raise ValueError("--nodes: more than one node needs --slurm")
        if (self.partition or self.account) and not self.slurm:
            raise ValueError("--partition / --account: only with --slurm")

    @property
    def training_gpus(self) -> int:
        """GPUs one training job uses: the pipeline trains in its own process when local, so
        on one GPU (several GPUs need SLURM, one task per GPU)."""
        if not self.slurm:
            return min(1, self.gpus_per_node)
        return self.gpus_per_node * self.nodes


@dataclass(frozen=True)
class Plan:
    """The sized run; `why` holds the reason of each choice, by field name."""

    model: str
    needs_units: bool  # its task predicts k-means units (HuBERT), else self-distillation
    preset: str
    iterations: int
    steps: tuple[int, ...]  # per iteration
    num_units: tuple[int, ...]  # per iteration (spidr/dinosr: the final k-means)
    kmeans_fraction: tuple[float, ...]  # per iteration
    layer: int | None  # iteration 2's target layer (HuBERT)
    batch_seconds: float  # per GPU (or the CPU)
    min_crop_seconds: float
    max_crop_seconds: float
    lr: float
    schedule: str
    warmup_steps: int | None  # None: the schedule's warmup_fraction (8%)
    head_only_steps: int
    num_shards: int  # feature/unit shards (0: one per local worker)
    estimate_seconds: float
    estimate_note: str
    why: dict[str, str] = field(default_factory=dict)


def epoch_matched_steps(
    recipe_steps: int, recipe_hours: float, recipe_update_seconds: float, hours: float,
    update_seconds: float, *, floor: int,
) -> int:  # fmt: skip
    """The recipe's number of passes over the data at our batch, never more steps than the
    recipe took (a larger corpus is not trained longer than the recipe trained its own)."""
    passes = recipe_steps * recipe_update_seconds / (recipe_hours * SECONDS_PER_HOUR)
    steps = passes * hours * SECONDS_PER_HOUR / update_seconds
    return int(min(recipe_steps, max(floor, round(steps))))


def plan_run(
    hours: float,
    hardware: Hardware,
    *,
    model: str = DEFAULT_KIND,
    init_from: bool = False,
    steps: int | None = None,
    with_eval: bool = False,
    cpu_step_seconds: float | None = None,
    vad_hours: float = 0.0,
) -> Plan:
    """Size a run of `model` on `hours` of training audio on `hardware`. `init_from`:
    continued pretraining (UPS); `steps`: iteration 1's steps, replacing the sized ones (the
    later iterations keep the recipe's ratio); `with_eval`: an evaluation corpus to score;
    `cpu_step_seconds`: the tiny step measured on the machine, for the estimate; `vad_hours`:
    long recordings the pipeline runs a VAD over first."""
    if hours <= 0:
        raise ValueError(f"the corpus holds no audio ({hours} h)")
    if model not in PRETRAINING:
        raise ValueError(f"--model must be one of {', '.join(PRETRAINING)}, got {model!r}")
    units = PRETRAINING[model].needs_units  # HuBERT's recipes; else self-distillation
    if init_from and not units:
        raise ValueError("--init-from: continued pretraining is the UPS recipe, HuBERT only")
    if steps is not None and steps < 1:
        raise ValueError(f"--steps: must be >= 1, got {steps}")
    gpus = hardware.training_gpus
    cpu = gpus == 0
    why: dict[str, str] = {}
    if init_from:
        plan = _continued(hours, gpus, why)
    elif units:
        plan = _hubert(hours, gpus, why)
    else:
        plan = _distill(model, hours, gpus, why)
    if steps is not None:
        ratio = [s / plan["steps"][0] for s in plan["steps"]]
        plan["steps"] = tuple(max(1, round(steps * r)) for r in ratio)
        plan["head_only_steps"] = min(plan["head_only_steps"], plan["steps"][0] // 5)
        why["steps"] = f"--steps {steps} (iteration 1; later iterations keep the recipe's ratio)"
    update_seconds = plan["batch_seconds"] * max(1, gpus)
    why["batch_seconds"] += (
        f"; {update_seconds:g} s of audio per update"
        f" ({plan['steps'][0] * update_seconds / (hours * SECONDS_PER_HOUR):.1f} passes over"
        " the training audio in iteration 1)"
    )
    num_shards = 0 if not hardware.slurm else max(16, math.ceil(hours / 10))
    why["num_shards"] = (
        "one shard per local worker (one per core)"
        if not hardware.slurm
        else "one SLURM array task per ~10 h of audio, at least 16"
    )
    fractions = tuple(kmeans_fraction(k, hours) for k in plan["num_units"])
    why["kmeans_fraction"] = (
        f"{KMEANS_FRACTION:.0%} of the frames (fairseq), at least"
        f" {KMEANS_FRAMES_PER_CLUSTER} frames per cluster"
    )
    estimate, note = estimate_seconds(
        model, plan["steps"], plan["batch_seconds"], hours, cpu=cpu, with_eval=with_eval,
        step_seconds=cpu_step_seconds, vad_hours=vad_hours,
    )  # fmt: skip
    return Plan(model=model, needs_units=units, num_shards=num_shards, estimate_seconds=estimate,
                kmeans_fraction=fractions,
                estimate_note=note, why=why, **plan)  # fmt: skip


def kmeans_fraction(k: int, hours: float) -> float:
    """The fraction of the training frames k-means fits on (KMEANS_FRACTION, or more)."""
    frames = hours * SECONDS_PER_HOUR * FRAMES_PER_SECOND
    return round(min(1.0, max(KMEANS_FRACTION, k * KMEANS_FRAMES_PER_CLUSTER / frames)), 3)


def _hubert(hours: float, gpus: int, why: dict[str, str]) -> dict:
    if gpus == 0:
        scaled = [min(s, max(MIN_CPU_STEPS, round(s * hours / DEMO_HOURS))) for s in DEMO_STEPS]
        why.update(
            preset="the demo's tiny model (3.8M parameters, 64 CNN channels): what a CPU trains",
            batch_seconds="the demo's 8 x 3 s crops",
            steps=f"the demo's {DEMO_STEPS[0]} + {DEMO_STEPS[1]} steps for its 0.5 h, scaled to"
            f" {hours:.2f} h (the same passes over the data), never more",
            num_units="k = 100 twice, as the demo (k-means of a small corpus)",
            layer="layer 3 of 4, as the demo (deeper layers' units carry more phone information)",
            lr="the demo's lr 1e-3, cosine decay after 8% warm-up",
        )
        return dict(preset="tiny", iterations=2, steps=tuple(scaled), num_units=(100, 100),
                    layer=3, batch_seconds=DEMO_BATCH_SECONDS, min_crop_seconds=1.0,
                    max_crop_seconds=3.0, lr=1e-3, schedule="cosine", warmup_steps=None,
                    head_only_steps=0)  # fmt: skip
    update = 87.5 * gpus
    first = epoch_matched_steps(BASE_STEPS[0], BASE_HOURS, BASE_UPDATE_SECONDS, hours, update,
                                floor=MIN_GPU_STEPS)  # fmt: skip
    second = round(first * BASE_STEPS[1] / BASE_STEPS[0])
    k2 = 500 if hours >= K500_MIN_HOURS else 100
    why.update(
        preset="HuBERT base (95M), as the HuBERT paper and BabyHuBERT",
        batch_seconds="87.5 s per GPU, HuBERT base (BabyHuBERT: 175 s on 80 GB H100s)",
        steps=f"HuBERT base's passes over 960 h (250k steps of 2,800 s), at this batch and"
        f" {hours:g} h, at most its 250k / 400k steps",
        num_units=f"k = 100 on MFCC, then {k2}"
        + (" (HuBERT base)" if k2 == 500 else f" (500 needs >= {K500_MIN_HOURS:g} h for k-means)"),
        layer="layer 6 of 12, HuBERT base's second iteration",
        lr="HuBERT base: lr 5e-4, 8% warm-up (32k of 400k), linear decay",
    )
    return dict(preset="base", iterations=2, steps=(first, second), num_units=(100, k2), layer=6,
                batch_seconds=87.5, min_crop_seconds=2.0, max_crop_seconds=15.625, lr=5e-4,
                schedule="linear", warmup_steps=None, head_only_steps=0)  # fmt: skip


def _distill(model: str, hours: float, gpus: int, why: dict[str, str]) -> dict:
    if gpus == 0:
        steps = min(DEMO_DISTILL_STEPS,
                    max(MIN_CPU_STEPS, round(DEMO_DISTILL_STEPS * hours / DEMO_HOURS)))  # fmt: skip
        why.update(
            preset=f"the demo's tiny {model} (models/spidr_config.py)",
            batch_seconds="the demo's 8 x 3 s crops",
            steps=f"the demo's {DEMO_DISTILL_STEPS} steps for its 0.5 h, scaled to {hours:.2f} h,"
            " never more",
            num_units="k = 100 for the k-means of the trained model's best layer (final units)",
            layer="none: self-distillation needs no k-means targets",
            lr="the spidr recipe's AdamW and lr 5e-4, the demo's cosine schedule",
        )
        return dict(preset="tiny", iterations=1, steps=(steps,), num_units=(100,), layer=None,
                    batch_seconds=DEMO_BATCH_SECONDS, min_crop_seconds=1.0, max_crop_seconds=3.0,
                    lr=5e-4, schedule="cosine", warmup_steps=None,
                    head_only_steps=0)  # fmt: skip
    update = 237.5 * gpus
    steps = epoch_matched_steps(SPIDR_STEPS, BASE_HOURS, SPIDR_UPDATE_SECONDS, hours, update,
                                floor=MIN_GPU_STEPS)  # fmt: skip
    why.update(
        preset=f"{model} base (the spidr recipe)",
        batch_seconds="237.5 s per GPU, the spidr recipe (on 80 GB GPUs; halve it on 40 GB)",
        steps=f"the spidr recipe's passes over 960 h (400k steps of 3,800 s), at this batch and"
        f" {hours:g} h, at most 400k",
        num_units="k = 500 for the k-means of the trained model's best layer (final units)",
        layer="none: self-distillation needs no k-means targets",
        lr="the spidr recipe: lr 5e-4, tri-stage (3% warm-up, hold to half, decay to 1%)",
    )
    return dict(preset="base", iterations=1, steps=(steps,), num_units=(500,), layer=None,
                batch_seconds=237.5, min_crop_seconds=0.125, max_crop_seconds=20.0, lr=5e-4,
                schedule="tri_stage", warmup_steps=None, head_only_steps=0)  # fmt: skip


def _continued(hours: float, gpus: int, why: dict[str, str]) -> dict:
    """UPS: one epoch of the head only, then 4 epochs of everything (here 5 epochs in all)."""
    batch = DEMO_BATCH_SECONDS if gpus == 0 else 87.5
    epoch = max(1, round(hours * SECONDS_PER_HOUR / (batch * max(1, gpus))))
    why.update(
        preset="the checkpoint's own architecture (--init-from), with a new 100-unit head",
        batch_seconds="the demo's 8 x 3 s crops" if gpus == 0 else "87.5 s per GPU (HuBERT base)",
        steps="UPS: 1 epoch of the head only, then 4 epochs of everything",
        num_units="k = 100 on layer 6 of the checkpoint (UPS: a new 100-unit head)",
        layer="the checkpoint's layer 6 for the targets",
        lr="UPS: lr 5e-5, constant after 500 warm-up steps",
    )
    return dict(preset="base", iterations=1, steps=(5 * epoch,), num_units=(100,), layer=6,
                batch_seconds=batch, min_crop_seconds=2.0 if gpus else 1.0,
                max_crop_seconds=15.625 if gpus else 3.0, lr=5e-5, schedule="constant",
                warmup_steps=min(500, epoch), head_only_steps=epoch)  # fmt: skip


def estimate_seconds(
    model: str, steps: tuple[int, ...], batch_seconds: float, hours: float, *, cpu: bool,
    with_eval: bool, step_seconds: float | None = None, valid_fraction: float = 0.05,
    vad_hours: float = 0.0,
) -> tuple[float, str]:  # fmt: skip
    """The run's expected wall time and how it was reckoned. `step_seconds`: one training
    step measured on the machine (CPU); None: the quiet development machine's."""
    units = PRETRAINING[model].needs_units
    if not cpu:
        training = sum(steps) * batch_seconds / GPU_AUDIO_SECONDS_PER_SECOND
        note = (
            f"training only, at least: {sum(steps)} steps x {batch_seconds:g} s of audio per GPU"
            f" at {GPU_AUDIO_SECONDS_PER_SECOND:g} audio-s per GPU-s (SpidR's public H100 figure,"
            " not measured by hubertlab; A100: ~1,150); queueing, features and k-means on top"
            + (", and the VAD of the recordings" if vad_hours else "")
        )
        return training, note
    measured = step_seconds is not None
    reference = CPU_STEP_SECONDS_UNITS if units else CPU_STEP_SECONDS_DISTILL
    step = step_seconds if measured else reference
    batches = hours * SECONDS_PER_HOUR / batch_seconds  # one pass over the training audio
    forward = FORWARD_FRACTION * step
    other = CPU_VAD_SECONDS_PER_HOUR * vad_hours
    for k in range(len(steps)):
        other += CPU_FIXED_SECONDS + VALIDATIONS * valid_fraction * batches * forward
        if units:  # targets: MFCC in iteration 1, layer features after
            other += CPU_MFCC_SECONDS_PER_HOUR * hours + (batches * forward if k else 0.0)
        other += EVAL_STEPS * step if with_eval else 0.0
    if units or with_eval:  # the last model's units (final_units)
        other += CPU_FIXED_SECONDS + batches * forward
    total = MARGIN * (sum(steps) * step + other)
    source = "measured on this machine now" if measured else "the quiet 2-core machine's"
    note = (
        f"{sum(steps)} steps x {step:.2f} s ({source}) + {other:.0f} s of"
        f"{' VAD,' if vad_hours else ''} features, k-means, units,"
        f" validation{' and ABX' if with_eval else ''}, +{MARGIN - 1:.0%}"
    )
    return total, note


def format_duration(seconds: float) -> str:
    """'40 min', '3.5 h', '12 days'."""
    if seconds < 3600:
        return f"{max(1, round(seconds / 60))} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"
