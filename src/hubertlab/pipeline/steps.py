"""The pipeline's steps, built from its config. Iteration k makes its targets (features ->
k-means -> units -> unit quality: hubertlab.pipeline.targets), trains, selects the best
checkpoint and measures ABX per layer; iteration k+1 takes its features from that model's best
(or a fixed) layer.

Each step declares what its result depends on (`Step.inputs`: config values, input files, the
inputs of the steps it reads); hubertlab.pipeline.fingerprint hashes them."""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

from hubertlab.config import to_dict
from hubertlab.data.alignments import read_phone_segments
from hubertlab.data.manifest import read_manifest
from hubertlab.evaluate.abx import AbxConfig
from hubertlab.evaluate.abx_curves import CURVES_DIR, abx_curves
from hubertlab.evaluate.abx_sweep import (
    abx_of_features,
    abx_per_layer,
    mfcc_features,
    scores_from_json,
    write_abx_report,
)
from hubertlab.evaluate.units import unit_quality
from hubertlab.fileio import atomic_write_json
from hubertlab.models.checkpoint import from_pretrained, save_pretrained
from hubertlab.pipeline.config import IterationConfig, PipelineConfig, predicts_units, train_config
from hubertlab.pipeline.fingerprint import (
    InputFile,
    Upstream,
    drop_later_defaults,
    fingerprints,
    fold_mask,
)
from hubertlab.pipeline.longform import longform_steps, shards_step
from hubertlab.pipeline.runner import Step
from hubertlab.pipeline.targets import Shared, Trained, targets_steps
from hubertlab.slurm import submit_training
from hubertlab.train.checkpoint import latest_checkpoint, read_best
from hubertlab.train.loop import train as run_training
from hubertlab.train.validate import model_from_checkpoint
from hubertlab.units.assign import read_units
from hubertlab.units.codebook import transcribe_codebooks

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "eval")
# The baseline every model is compared with: MFCC with per-utterance mean and variance
# normalisation (raw MFCC is scored too, as a second row).
BASELINE_NAME = "MFCC + CMVN"
# Training settings that change how a run is watched, not what it computes (keep_every: which
# checkpoints stay on disk; leaving these out also keeps runs finished before they existed valid).
UNTRACKED_RUN_KEYS = (
    "progress_bar", "tensorboard", "log_every", "keep_freed_memory", "keep_every",
    "loggers", "wandb_project", "wandb_name", "wandb_mode",
)  # fmt: skip


def _model_steps(
    cfg: PipelineConfig, k: int, units_in: dict[str, Any], shared: Shared, previous: Trained | None
) -> tuple[list[Step], Trained]:
    """Iteration k's training, selection and evaluation steps, and what its model is made of."""
    root = cfg.iteration_dir(k)

    def train() -> dict:
        tcfg = train_config(cfg, k)
        if cfg.executor.kind == "slurm":
            job = submit_training(tcfg, cfg.executor.slurm, folder=root / "logs" / "train")
            return dict(job.result() or {})
        return dict(run_training(tcfg) or {})

    def select() -> dict:
        ckpt_dir = root / "train" / "checkpoints"
        best = read_best(ckpt_dir)
        path = ckpt_dir / best["path"] if best else latest_checkpoint(ckpt_dir)
        if path is None:
            raise FileNotFoundError(f"{ckpt_dir}: training left no checkpoint")
        save_pretrained(model_from_checkpoint(path), root / "model")
        return {"checkpoint": str(path), **(best or {})}

    def abx() -> dict:
        config = _abx_config(cfg, frame_shift_s=0.02)
        scores = abx_per_layer(
            from_pretrained(root / "model"),
            read_manifest(cfg.corpus.eval_manifest),
            cfg.corpus.eval_abx_item,
            config=config,
        )
        best = write_abx_report(
            scores, root / "abx", config=config, source={"model": str(root / "model")}
        )
        return {"best_layer": best.layer, "within": best.within, "across": best.across}

    settings = drop_later_defaults(fold_mask(to_dict(train_config(cfg, k))))
    for key in UNTRACKED_RUN_KEYS:
        settings["run"].pop(key, None)
    train_in = {"units": Upstream(units_in), "train": settings}
    steps = []
    if cfg.longform is not None and cfg.longform.shards > 0:
        shards, shards_in = shards_step(cfg, k, units_in)
        steps.append(shards)
        train_in["shards"] = Upstream(shards_in)
    if cfg.iterations[k - 1].init == "previous":
        train_in["init"] = previous.model
    select_in = {"train": Upstream(train_in)}
    abx_in = {**shared.abx, "model": Upstream(select_in)}
    steps += [
        Step(f"iteration{k}/train", root / "train", train, "masked-prediction pretraining",
             inputs=train_in),
        Step(f"iteration{k}/select", root / "model", select, "export the best checkpoint",
             inputs=select_in),
    ]  # fmt: skip
    if _abx_enabled(cfg):
        steps.append(Step(f"iteration{k}/abx", root / "abx", abx, "ABX per layer", inputs=abx_in))
    if _abx_enabled(cfg) and cfg.abx.curves:
        steps.append(_curve_step(cfg, k, {**shared.abx, "train": Upstream(train_in)}))
    if has_codebook_step(cfg, k):
        codebooks_in = {"model": Upstream(select_in)}
        codebooks_in.update({name: shared.files[name] for name in ("eval_manifest", "eval_phones")})
        steps.append(_codebook_step(cfg, k, codebooks_in))
    return steps, Trained(model=Upstream(select_in), abx=Upstream(abx_in))


def _curve_step(cfg: PipelineConfig, k: int, inputs: dict[str, Any]) -> Step:
    """ABX per layer of every kept checkpoint of iteration k against the baseline step's MFCC
    scores (hubertlab.evaluate.abx_curves: resumes checkpoint by checkpoint)."""
    root = cfg.iteration_dir(k)

    def run() -> dict:
        baseline = json.loads((cfg.out_dir / "baseline" / "abx.json").read_text())
        report = abx_curves(
            root / "train",
            cfg.corpus.eval_manifest,
            cfg.corpus.eval_abx_item,
            root / CURVES_DIR,
            config=_abx_config(cfg, frame_shift_s=0.02),
            baselines=scores_from_json(baseline["scores"]),
        )
        return {"steps": [s["step"] for s in report["steps"]], "best": report["best"]}

    return Step(
        f"iteration{k}/abx-curve", root / CURVES_DIR, run, "ABX per layer of every checkpoint",
        inputs=inputs,
    )  # fmt: skip


def has_codebook_step(cfg: PipelineConfig, k: int) -> bool:
    """Whether iteration k scores its codebook units: a SpidR/DinoSR model and eval phones."""
    return not predicts_units(cfg, k) and cfg.corpus.eval_phones is not None


def _codebook_step(cfg: PipelineConfig, k: int, inputs: dict[str, Any]) -> Step:
    """Units of every codebook head of a SpidR/DinoSR model (the argmax, no k-means) on the
    held-out corpus, scored as k-means units are: codebooks/quality.json."""
    root = cfg.iteration_dir(k)
    out = root / "codebooks"

    def run() -> dict:
        model = from_pretrained(root / "model")
        phones = read_phone_segments(cfg.corpus.eval_phones)
        out_dirs = {layer: out / f"layer{layer}" for layer in model.cfg.target_layers}
        units = transcribe_codebooks(read_manifest(cfg.corpus.eval_manifest), model, out_dirs)
        layers = {str(layer): unit_quality(read_units(units[layer]), phones) for layer in units}
        best = max(layers, key=lambda layer: layers[layer]["pnmi"])
        atomic_write_json(out / "quality.json", {"layers": layers, "best_layer": int(best)})
        return {"best_layer": int(best), "pnmi": layers[best]["pnmi"]}

    return Step(
        f"iteration{k}/codebooks", out, run, "PNMI of each codebook head's units (held-out)",
        inputs=inputs,
    )  # fmt: skip


def _abx_enabled(cfg: PipelineConfig) -> bool:
    return cfg.abx.enabled and cfg.corpus.eval_abx_item is not None


def _abx_config(cfg: PipelineConfig, *, frame_shift_s: float) -> AbxConfig:
    return AbxConfig(
        frame_shift_s=frame_shift_s,
        speaker_modes=cfg.abx.speaker_modes,
        max_tokens_per_group=cfg.abx.max_tokens_per_group,
        max_x_speakers=cfg.abx.max_x_speakers,
        seed=cfg.seed,
    )


def _baseline_step(cfg: PipelineConfig, shared: Shared) -> Step:
    out = cfg.out_dir / "baseline"

    def run() -> dict:
        manifest = read_manifest(cfg.corpus.eval_manifest)
        config = _abx_config(cfg, frame_shift_s=0.01)
        scores = [
            abx_of_features(
                mfcc_features(manifest, cmvn=cmvn), cfg.corpus.eval_abx_item, config, name
            )
            for name, cmvn in ((BASELINE_NAME, True), ("MFCC (raw)", False))
        ]
        write_abx_report(scores, out, config=config, source={"features": "mfcc"})
        return {s.name: {"within": s.within, "across": s.across} for s in scores}

    return Step(
        "baseline/abx-mfcc", out, run, "ABX of MFCC features: with CMVN (the baseline), and raw",
        inputs={**shared.abx, "mfcc": ["cmvn", "raw"]},
    )  # fmt: skip


def _shared_inputs(cfg: PipelineConfig, spans: Upstream | None) -> Shared:
    """`spans`: with [longform], what the spans the iterations train on were made from."""
    names = ("train_manifest", "valid_manifest", "eval_manifest", "eval_phones", "eval_abx_item")
    files = {name: InputFile(getattr(cfg.corpus, name)) for name in names}
    if spans is not None:
        files.update(train_manifest=spans, valid_manifest=spans)
    # `curves` adds a step and changes no score: left out, so turning it on redoes nothing.
    abx = {"abx": {k: v for k, v in to_dict(cfg.abx).items() if k != "curves"}, "seed": cfg.seed}
    abx.update(eval_manifest=files["eval_manifest"], eval_abx_item=files["eval_abx_item"])
    return Shared(files=files, abx=abx)


def next_targets(cfg: PipelineConfig) -> IterationConfig | None:
    """The targets a next iteration would train on, from the last model: its layer chosen as
    the last iteration chose its own (a fixed number, or the best by ABX). None when off."""
    last = cfg.iterations[-1]
    fixed = last.features == "layer" and last.checkpoint is None and last.layer != "best"
    # Without ABX only a configured layer can be clustered.
    if not (cfg.final_units and (fixed or _abx_enabled(cfg))):
        return None
    return IterationConfig(
        features="layer",
        layer=last.layer if fixed else "best",
        num_units=last.num_units,
        kmeans_fraction=last.kmeans_fraction,
        kmeans_max_memory_gb=last.kmeans_max_memory_gb,
        kmeans_max_iter=last.kmeans_max_iter,
    )


def build_steps(cfg: PipelineConfig) -> list[Step]:
    """Every step of the run, in order, with its fingerprint. Nothing is computed here (the
    input files are hashed)."""
    steps, spans = longform_steps(cfg) if cfg.longform is not None else ([], None)
    shared = _shared_inputs(cfg, spans)
    if _abx_enabled(cfg):
        steps.append(_baseline_step(cfg, shared))
    previous: Trained | None = None
    for k, it in enumerate(cfg.iterations, start=1):
        # A self-distilling iteration (SpidR, DinoSR) trains on the audio alone.
        units_in: dict[str, Any] = {"manifests": shared.files}
        if predicts_units(cfg, k):
            targets, units_in = targets_steps(cfg, k, it, shared, previous, splits=SPLITS)
            steps += targets
        model_steps, previous = _model_steps(cfg, k, units_in, shared, previous)
        steps += model_steps
    final = next_targets(cfg)
    if final is not None:
        k = len(cfg.iterations) + 1
        steps += targets_steps(cfg, k, final, shared, previous, splits=("train", "eval"))[0]
    declared = fingerprints([step.inputs for step in steps])
    return [dataclasses.replace(s, fingerprint=fp) for s, fp in zip(steps, declared, strict=True)]
