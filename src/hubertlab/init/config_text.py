"""The text of the pipeline config `hubertlab init` writes: every choice with its reason."""

from __future__ import annotations

from pathlib import Path

from hubertlab.init.options import CorpusStats, InitOptions
from hubertlab.init.sizing import Plan, format_duration

DEMO_CONV_CHANNELS = [64] * 7


def model_table(plan: Plan, init_from: Path | None) -> dict:
    """[train.model] of the plan, without its comments (for measuring a step)."""
    if init_from is not None:
        return {"from_pretrained": str(init_from), "new_head": True}
    if plan.preset == "tiny" and plan.needs_units:
        return {"preset": "tiny", "overrides": {"conv_channels": DEMO_CONV_CHANNELS}}
    return {"preset": plan.preset}


def _hardware(options: InitOptions) -> str:
    hw = options.hardware
    if hw.slurm:
        return f"SLURM, {hw.nodes} node(s) x {hw.gpus_per_node} GPU(s)"
    if hw.gpus_per_node > 1:
        return (
            f"this machine, 1 of its {hw.gpus_per_node} GPUs (the local pipeline trains in one "
            "process; --slurm uses them all)"
        )
    return "this machine, 1 GPU" if hw.gpus_per_node else "this machine's CPU"


def _corpus(
    options: InitOptions, num_valid: int, fraction: float, long_form: str | None
) -> list[str]:
    lines = [
        "[corpus]",
        'train_manifest = "manifest.train.csv"',
        f'valid_manifest = "manifest.valid.csv"   # {num_valid} files ({fraction:.1%}, at most'
        " ~1 h): validation loss picks the best checkpoint",
    ]
    if long_form:
        lines = [
            "[corpus]",
            'train_manifest = "manifest.csv"   # the recordings, cut into spans by [longform]',
        ]
    if options.eval_demo:
        languages = ", ".join(options.eval_languages)
        lines = [
            f"# Evaluation on SYNTHETIC speech (`--eval demo`: eSpeak voices in {languages},",
            "# with exact phone alignments): ABX per layer and PNMI of the units are tracked,",
            "# the layer 'best' is chosen by it, and the report marks every figure synthetic.",
            *lines,
            'eval_manifest = "eval/manifest.csv"',
            'eval_phones = "eval/phones.jsonl"',
            'eval_abx_item = "eval/abx.item"',
        ]
    else:
        lines = [
            "# No evaluation corpus: checkpoints are chosen by validation loss and the next",
            "# iteration's layer is the configured one (the report says so). Your own phone",
            "# alignments: eval_manifest, eval_phones, eval_abx_item; or rerun `hubertlab init`",
            "# with `--eval demo` for a synthetic one (ABX per layer and PNMI).",
            *lines,
        ]
    return lines


def _longform(long_form: str | None, fraction: float, options: InitOptions) -> list[str]:
    if not long_form:
        return []
    if options.ups_hours is None:
        how = [
            "# Before the iterations the pipeline finds the speech (VAD) and cuts it into 2-30 s",
            "# spans (BabyHuBERT's segment policy); the iterations train on the spans. Steps and",
            "# k-means are sized on the recordings' hours, an upper bound (silence is left out).",
        ]
        selection = [
            'selection = "segments"  # or "ups" with hours = H (lid = "lid.jsonl"): 10 s chunks'
        ]
    else:
        how = [
            "# Before the iterations the pipeline finds the speech (VAD) and picks 10 s chunks",
            "# with >= 8 s of speech, densest (and scarcest-language) recordings first, up to",
            "# the budget (the UPS selection); the iterations train on the chunks, sized on the",
            "# budget.",
        ]
        selection = [
            'selection = "ups"       # or "segments": every speech span, no budget',
            f"hours = {options.ups_hours:g}   # the budget of picked audio",
        ]
        if options.lid is not None:
            selection.append(f'lid = "{Path(options.lid).resolve()}"   # language-ID results')
    return [
        "",
        "[longform]",
        f"# Long recordings: {long_form}.",
        *how,
        "# The recipe, and its commands one by one: docs/long-form.md.",
        'vad = "silero"          # silero-vad; "energy": no model, for stationary noise only',
        *selection,
        f"valid_fraction = {fraction:.3g}   # of the spans validate (whole recordings from 20 on)",
        f"shards = {options.shards}              # > 0: each iteration streams its spans from"
        " tar shards",
    ]


def _executor(plan: Plan, options: InitOptions) -> list[str]:
    hw = options.hardware
    if not hw.slurm:
        return [
            "[executor]",
            'kind = "local"   # shards as processes on this machine',
            "workers = 0      # one per core",
        ]
    return [
        "[executor]",
        'kind = "slurm"',
        f"num_shards = {plan.num_shards}   # {plan.why['num_shards']}",
        "[executor.slurm]",
        f'partition = "{hw.partition}"',
        f'account = "{hw.account}"',
        "time_min = 1440      # per job; training requeues itself and resumes",
        f"nodes = {hw.nodes}            # the training job",
        f"gpus_per_node = {hw.gpus_per_node}",
        "cpus_per_task = 8",
        "mem_gb = 64          # per node",
    ]


def _model(plan: Plan, options: InitOptions) -> list[str]:
    lines = ["[train.model]"]
    if not plan.needs_units:
        lines.append(f'kind = "{plan.model}"')
    if options.init_from is not None:
        lines += [
            f'from_pretrained = "{Path(options.init_from).resolve()}"   # {plan.why["preset"]}',
            "new_head = true",
            f"# UPS: the head alone for one epoch ({plan.head_only_steps} steps), then everything."
            " UPS trains the",
            "# head at lr 5e-4 and the rest at 5e-5; one learning rate (below) serves both here.",
            f"head_only_steps = {plan.head_only_steps}",
        ]
        return lines
    lines.append(f'preset = "{plan.preset}"   # {plan.why["preset"]}')
    if plan.preset == "base" and not plan.needs_units:
        steps = plan.steps[0]
        lines.append(
            f"freeze_cnn_from_step = {steps // 2}   # spidr recipe: CNN frozen from 200k of 400k"
        )
    if plan.preset == "tiny" and plan.needs_units:
        lines += [
            "[train.model.overrides]",
            f"conv_channels = {DEMO_CONV_CHANNELS}   # the demo's: ~0.27 s a step instead of 0.37",
        ]
    return lines


def _optim(plan: Plan) -> list[str]:
    lines = [
        "[train.optim]",
        f"lr = {plan.lr:g}   # {plan.why['lr']}",
        f'schedule = "{plan.schedule}"',
    ]
    if plan.warmup_steps is not None:
        lines.append(f"warmup_steps = {plan.warmup_steps}")
    if not plan.needs_units:
        lines += [
            "betas = [0.9, 0.95]",
            "eps = 1e-6",
            "weight_decay = 0.01",
            "clip_grad_norm = 10.0",
        ]
    if plan.schedule == "tri_stage":
        lines += ["warmup_fraction = 0.03", "hold_fraction = 0.47", "final_lr_scale = 0.01"]
    if plan.head_only_steps:
        lines.append("clip_grad_norm = 1.0   # UPS")
    lines.append(f"max_steps = {plan.steps[0]}   # {plan.why['steps']}")
    return lines


def _iterations(plan: Plan, options: InitOptions, layer: int | None) -> list[str]:
    if options.init_from is not None:
        return [
            f"# The targets: k = {plan.num_units[0]} on layer {layer} of the --init-from model.",
            "[[iterations]]",
            'features = "layer"',
            f'checkpoint = "{Path(options.init_from).resolve()}"',
            f"layer = {layer}",
            f"num_units = {plan.num_units[0]}",
            f"kmeans_fraction = {plan.kmeans_fraction[0]:g}   # {plan.why['kmeans_fraction']}",
        ]
    if not plan.needs_units:
        return [
            f"# One {plan.model} iteration: self-distillation, no k-means targets.",
            f"# num_units: {plan.why['num_units']}.",
            "[[iterations]]",
            f"num_units = {plan.num_units[0]}",
            f"kmeans_fraction = {plan.kmeans_fraction[0]:g}   # {plan.why['kmeans_fraction']}",
        ]
    lines = [
        f"# Iteration 1: MFCC targets, k = {plan.num_units[0]}, from scratch;"
        f" {plan.why['num_units']}.",
        "[[iterations]]",
        'features = "mfcc"',
        *_mfcc_normalisation(plan),
        f"num_units = {plan.num_units[0]}",
        f"kmeans_fraction = {plan.kmeans_fraction[0]:g}   # {plan.why['kmeans_fraction']}",
        "",
        f"# Iteration 2: {plan.why['layer']}"
        + ("; 'best' picks it by ABX" if options.eval_demo else ""),
        "# (a number: the next iteration's targets come from that layer, with or without ABX).",
        "[[iterations]]",
        'features = "layer"',
        f"layer = {layer}",
        f"num_units = {plan.num_units[1]}",
        f"kmeans_fraction = {plan.kmeans_fraction[1]:g}",
    ]
    if plan.preset == "tiny":
        lines += [
            'init = "previous"   # the demo: continued from iteration 1 beat a fresh model',
            "[iterations.train.optim]",
            f"max_steps = {plan.steps[1]}",
            "[iterations.train.model.overrides]",
            "unmasked_weight = 0.0   # the demo: a trained model does better on masked frames only",
        ]
    else:
        lines += [
            'init = "scratch"   # HuBERT base trains iteration 2 from scratch',
            "[iterations.train.optim]",
            f"max_steps = {plan.steps[1]}   # HuBERT base: 400k for iteration 2 (x1.6)",
        ]
    return lines


def _mfcc_normalisation(plan: Plan) -> list[str]:
    """Iteration 1's k-means on MFCC normalised per utterance: the demo's recipe; HuBERT base's
    published recipe clusters raw MFCC."""
    why = "units that follow the speaker less (demo: across-speaker ABX 4.69 vs 7.31)"
    if plan.preset == "tiny":
        return [f"cmvn = true   # {why}"]
    return [f"# cmvn = true   # the paper clusters raw MFCC; {why}"]


def render_config(
    plan: Plan, stats: CorpusStats, options: InitOptions, *, audio: Path, config: Path,
    num_valid: int, valid_fraction: float, rejected: int, layer: int | None,
    long_form: str | None = None,
) -> str:  # fmt: skip
    """The commented pipeline TOML of `plan`."""
    every = max(1, min(5000, plan.steps[0] // 4))
    cpu = plan.preset == "tiny" and options.hardware.training_gpus == 0
    lines = [
        f"# Written by `hubertlab init` for {audio}: {stats.num_files} files, {stats.hours:.2f} h"
        f" (median {stats.median_seconds:.1f} s, {stats.shortest_seconds:.1f}-"
        f"{stats.longest_seconds:.1f} s), {rejected} rejected (manifest.csv.rejected.tsv).",
        f"# Hardware: {_hardware(options)}.",
        f"# Run it:  hubertlab pipeline {config}",
        f"# Expected wall time: ~{format_duration(plan.estimate_seconds)} ({plan.estimate_note}).",
        "# How each choice follows from the hours and the hardware: hubertlab/init/sizing.py.",
        'out_dir = "run"',
        f"seed = {options.seed}",
        "",
        *_corpus(options, num_valid, valid_fraction, long_form),
        *_longform(long_form, valid_fraction, options),
        "",
        *_executor(plan, options),
        "",
        "[abx]",
        "curves = false   # true: ABX of every checkpoint (learning curves), one sweep each",
        "",
        *_model(plan, options),
        "",
        "[train.data]",
        f"min_crop_seconds = {plan.min_crop_seconds:g}   # shorter files are left out",
        f"max_crop_seconds = {plan.max_crop_seconds:g}",
        f"batch_seconds = {plan.batch_seconds:g}   # {plan.why['batch_seconds']}",
        f"num_workers = {1 if cpu else 6}",
        "",
        *_optim(plan),
        "",
        "[train.run]",
        'precision = "bf16"   # no loss scaling (fp16 collapses: REFERENCE 8)',
        f"ckpt_every = {every}",
        f"valid_every = {every}",
        "keep_last = 2",
        f"log_every = {max(1, min(100, every // 4))}",
        "progress_bar = false",
        "",
        *_iterations(plan, options, layer),
        "",
    ]
    return "\n".join(lines)
