"""The pipeline's steps, built from its config. Iteration k makes its targets (features ->
k-means -> units -> unit quality), trains, selects the best checkpoint and measures ABX per
layer; iteration k+1 takes its features from that model's best (or a fixed) layer."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubertlab.config import ConfigError
from hubertlab.data.manifest import read_manifest
from hubertlab.pipeline.config import IterationConfig, PipelineConfig
from hubertlab.pipeline.executor import run_shards
from hubertlab.pipeline.fingerprint import step_fingerprints
from hubertlab.pipeline.runner import Step
from hubertlab.tasks import PRETRAINING, pretraining_kind
from hubertlab.units.assign import UNITS_NAME, read_units

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "eval")
# The baseline every model is compared with: MFCC with per-utterance mean and variance
# normalisation (raw MFCC is scored too, as a second row).
BASELINE_NAME = "MFCC + CMVN"
# Keys of [train.data] the pipeline fills in itself.
PIPELINE_DATA_KEYS = ("train_manifest", "train_units", "num_units", "valid_manifest", "valid_units")


@dataclass(frozen=True)
class FeatureSpec:
    """Picklable description of a feature source, so shard processes can rebuild it."""

    kind: str  # "mfcc" | "layer"
    checkpoint: str | None = None
    layer: int | None = None

    def extractor(self):
        from hubertlab.features.extractors import build_extractor

        return build_extractor(self.kind, self.checkpoint, self.layer)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def train_tables(cfg: PipelineConfig, k: int) -> dict[str, Any]:
    """The [train] tables of iteration k: the shared ones with the iteration's overrides."""
    return _merge(cfg.train, cfg.iterations[k - 1].train)


def predicts_units(cfg: PipelineConfig, k: int) -> bool:
    """Whether iteration k's objective trains on units (HuBERT) or needs none (SpidR,
    DinoSR: self-distillation, so the iteration has no features/k-means/units steps)."""
    task = PRETRAINING.get(pretraining_kind(train_tables(cfg, k).get("model")))
    return task is not None and task.needs_units  # an unknown kind fails in train_config


def train_config(cfg: PipelineConfig, k: int):
    """The TrainConfig of iteration k: [train] + the iteration's overrides + the paths."""
    from hubertlab.train.config import train_config_from_dict

    it = cfg.iterations[k - 1]
    tables = train_tables(cfg, k)
    data = tables.setdefault("data", {})
    taken = [key for key in PIPELINE_DATA_KEYS if key in data]
    if taken:
        raise ConfigError(f"train.data.{taken[0]}: set by the pipeline, leave it out")
    data.update(
        train_manifest=str(cfg.corpus.train_manifest),
        valid_manifest=str(cfg.corpus.valid_manifest),
    )
    if predicts_units(cfg, k):
        units = cfg.iteration_dir(k) / "units"
        data.update(
            train_units=[str(units / "train" / UNITS_NAME)],
            num_units=[it.num_units],
            valid_units=[str(units / "valid" / UNITS_NAME)],
        )
    run = tables.setdefault("run", {})
    run["out_dir"] = str(cfg.iteration_dir(k) / "train")
    if cfg.abx.curves:  # the curves' points: every checkpoint unless told otherwise
        from hubertlab.train.config import RunSection

        run.setdefault("keep_every", run.get("ckpt_every", RunSection.ckpt_every))
    run.setdefault("seed", cfg.seed)
    if it.init == "previous":
        model = tables.setdefault("model", {})
        model["from_pretrained"] = str(cfg.iteration_dir(k - 1) / "model")
        if predicts_units(cfg, k):
            model["new_head"] = True  # the new iteration's units are new clusters
    return train_config_from_dict(tables, where="train")


def best_layer(abx_dir: Path) -> int:
    path = abx_dir / "best_layer.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no ABX result to choose the layer from")
    return int(json.loads(path.read_text())["layer"])


def feature_spec(cfg: PipelineConfig, k: int, it: IterationConfig) -> FeatureSpec:
    """Where iteration k's targets come from (resolved when the step runs: 'best' needs the
    previous iteration's ABX)."""
    if it.features == "mfcc":
        return FeatureSpec("mfcc")
    if it.checkpoint is not None:
        return FeatureSpec("layer", str(it.checkpoint), int(it.layer))
    previous = cfg.iteration_dir(k - 1)
    layer = best_layer(previous / "abx") if it.layer == "best" else int(it.layer)
    return FeatureSpec("layer", str(previous / "model"), layer)


# ----------------------------------------------------------------- shard bodies (picklable)
def features_shard(
    shard: int, num_shards: int, manifest: str, out: str, spec: FeatureSpec, dtype: str
) -> None:
    from hubertlab.features.store import extract_features_to_store

    extract_features_to_store(manifest, out, spec.extractor(), shard, num_shards, dtype)


def units_shard(
    shard: int,
    num_shards: int,
    manifest: str,
    kmeans_dir: str,
    out: str,
    spec: FeatureSpec,
    store: str | None,
) -> None:
    from hubertlab.units.assign import transcribe

    # The shard that finishes last merges all shards into out/units.jsonl.
    transcribe(manifest, kmeans_dir, store or spec.extractor(), out, shard, num_shards)


# ----------------------------------------------------------------- step bodies
def _manifests(cfg: PipelineConfig) -> dict[str, Path]:
    paths = {
        "train": cfg.corpus.train_manifest,
        "valid": cfg.corpus.valid_manifest,
        "eval": cfg.corpus.eval_manifest,
    }
    return {split: path for split, path in paths.items() if path is not None}


def _targets_steps(cfg: PipelineConfig, k: int, it: IterationConfig, *, splits) -> list[Step]:
    root = cfg.iteration_dir(k)
    store, kmeans_dir, units_dir = root / "features", root / "kmeans", root / "units"
    manifests = {s: p for s, p in _manifests(cfg).items() if s in splits}

    def features() -> dict:
        spec = feature_spec(cfg, k, it)
        run_shards(
            cfg.executor,
            features_shard,
            (str(cfg.corpus.train_manifest), str(store / "store"), spec, cfg.feature_dtype),
            root / "logs",
            f"it{k}-features",
        )
        return {"kind": spec.kind, "checkpoint": spec.checkpoint, "layer": spec.layer}

    def kmeans() -> dict:
        from hubertlab.units.kmeans import fit_kmeans

        model = fit_kmeans(
            store / "store",
            it.num_units,
            fraction=it.kmeans_fraction,
            seed=cfg.seed,
            max_memory_gb=it.kmeans_max_memory_gb,
            max_iter=it.kmeans_max_iter,
        )
        model.save(kmeans_dir / "model")
        return {"k": it.num_units, "inertia_per_frame": model.meta["inertia_per_frame"]}

    def units() -> dict:
        spec = feature_spec(cfg, k, it)
        counts = {}
        for split, manifest in manifests.items():
            # Training units come from the stored features; the other splits are computed
            # on the fly with the same extractor and the same k-means (one quantizer).
            source = str(store / "store") if split == "train" else None
            run_shards(
                cfg.executor,
                units_shard,
                (str(manifest), str(kmeans_dir / "model"), str(units_dir / split), spec, source),
                root / "logs",
                f"it{k}-units-{split}",
            )
            counts[split] = len(read_units(units_dir / split))
        return {"utterances": counts}

    def quality() -> dict:
        from hubertlab.data.alignments import read_phone_segments
        from hubertlab.evaluate.units import unit_quality
        from hubertlab.fileio import atomic_write_json

        result = unit_quality(
            read_units(units_dir / "eval"), read_phone_segments(cfg.corpus.eval_phones)
        )
        atomic_write_json(root / "quality" / "quality.json", result)
        return result

    steps = [
        Step(f"iteration{k}/features", store, features, "frame features of the training set"),
        Step(f"iteration{k}/kmeans", kmeans_dir, kmeans, f"k-means, k={it.num_units}"),
        Step(f"iteration{k}/units", units_dir, units, "units for " + ", ".join(manifests)),
    ]
    if cfg.corpus.eval_phones is not None:
        steps.append(
            Step(
                f"iteration{k}/quality",
                root / "quality",
                quality,
                "PNMI and purities of the held-out corpus's units",
            )
        )
    return steps


def _model_steps(cfg: PipelineConfig, k: int) -> list[Step]:
    root = cfg.iteration_dir(k)

    def train() -> dict:
        tcfg = train_config(cfg, k)
        if cfg.executor.kind == "slurm":
            from hubertlab.slurm import submit_training

            job = submit_training(tcfg, cfg.executor.slurm, folder=root / "logs" / "train")
            return dict(job.result() or {})
        from hubertlab.train.loop import train as run_training

        return dict(run_training(tcfg) or {})

    def select() -> dict:
        from hubertlab.models.checkpoint import save_pretrained
        from hubertlab.train.checkpoint import latest_checkpoint, read_best
        from hubertlab.train.validate import model_from_checkpoint

        ckpt_dir = root / "train" / "checkpoints"
        best = read_best(ckpt_dir)
        path = ckpt_dir / best["path"] if best else latest_checkpoint(ckpt_dir)
        if path is None:
            raise FileNotFoundError(f"{ckpt_dir}: training left no checkpoint")
        save_pretrained(model_from_checkpoint(path), root / "model")
        return {"checkpoint": str(path), **(best or {})}

    def abx() -> dict:
        from hubertlab.evaluate.abx_sweep import abx_per_layer, write_abx_report
        from hubertlab.models.checkpoint import from_pretrained

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

    steps = [
        Step(f"iteration{k}/train", root / "train", train, "masked-prediction pretraining"),
        Step(f"iteration{k}/select", root / "model", select, "export the best checkpoint"),
    ]
    if _abx_enabled(cfg):
        steps.append(Step(f"iteration{k}/abx", root / "abx", abx, "ABX per layer"))
    if _abx_enabled(cfg) and cfg.abx.curves:
        steps.append(_curve_step(cfg, k))
    if has_codebook_step(cfg, k):
        steps.append(_codebook_step(cfg, k))
    return steps


def _curve_step(cfg: PipelineConfig, k: int) -> Step:
    """ABX per layer of every kept checkpoint of iteration k against the baseline step's MFCC
    scores (hubertlab.evaluate.abx_curves: resumes checkpoint by checkpoint)."""
    from hubertlab.evaluate.abx_curves import CURVES_DIR

    root = cfg.iteration_dir(k)

    def run() -> dict:
        from hubertlab.evaluate.abx_curves import abx_curves
        from hubertlab.evaluate.abx_sweep import scores_from_json

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
        f"iteration{k}/abx-curve", root / CURVES_DIR, run, "ABX per layer of every checkpoint"
    )


def has_codebook_step(cfg: PipelineConfig, k: int) -> bool:
    """Whether iteration k scores its codebook units: a SpidR/DinoSR model and eval phones."""
    return not predicts_units(cfg, k) and cfg.corpus.eval_phones is not None


def _codebook_step(cfg: PipelineConfig, k: int) -> Step:
    """Units of every codebook head of a SpidR/DinoSR model (the argmax, no k-means) on the
    held-out corpus, scored as k-means units are: codebooks/quality.json."""
    root = cfg.iteration_dir(k)
    out = root / "codebooks"

    def run() -> dict:
        from hubertlab.data.alignments import read_phone_segments
        from hubertlab.evaluate.units import unit_quality
        from hubertlab.fileio import atomic_write_json
        from hubertlab.models.checkpoint import from_pretrained
        from hubertlab.units.codebook import transcribe_codebooks

        model = from_pretrained(root / "model")
        phones = read_phone_segments(cfg.corpus.eval_phones)
        out_dirs = {layer: out / f"layer{layer}" for layer in model.cfg.target_layers}
        units = transcribe_codebooks(read_manifest(cfg.corpus.eval_manifest), model, out_dirs)
        layers = {str(layer): unit_quality(read_units(units[layer]), phones) for layer in units}
        best = max(layers, key=lambda layer: layers[layer]["pnmi"])
        atomic_write_json(out / "quality.json", {"layers": layers, "best_layer": int(best)})
        return {"best_layer": int(best), "pnmi": layers[best]["pnmi"]}

    return Step(
        f"iteration{k}/codebooks", out, run, "PNMI of each codebook head's units (held-out)"
    )


def _abx_enabled(cfg: PipelineConfig) -> bool:
    return cfg.abx.enabled and cfg.corpus.eval_abx_item is not None


def _abx_config(cfg: PipelineConfig, *, frame_shift_s: float):
    from hubertlab.evaluate.abx import AbxConfig

    return AbxConfig(
        frame_shift_s=frame_shift_s,
        speaker_modes=cfg.abx.speaker_modes,
        max_tokens_per_group=cfg.abx.max_tokens_per_group,
        max_x_speakers=cfg.abx.max_x_speakers,
        seed=cfg.seed,
    )


def _baseline_step(cfg: PipelineConfig) -> Step:
    out = cfg.out_dir / "baseline"

    def run() -> dict:
        from hubertlab.evaluate.abx_sweep import abx_of_features, mfcc_features, write_abx_report

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
        "baseline/abx-mfcc", out, run, "ABX of MFCC features: with CMVN (the baseline), and raw"
    )


def next_targets(cfg: PipelineConfig) -> IterationConfig | None:
    """The targets a next iteration would train on, from the last model: its layer chosen as
    the last iteration chose its own (a fixed number, or the best by ABX). None when off."""
    if not (cfg.final_units and _abx_enabled(cfg)):
        return None
    last = cfg.iterations[-1]
    fixed = last.features == "layer" and last.checkpoint is None and last.layer != "best"
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
    steps = [_baseline_step(cfg)] if _abx_enabled(cfg) else []
    for k, it in enumerate(cfg.iterations, start=1):
        if predicts_units(cfg, k):
            steps += _targets_steps(cfg, k, it, splits=SPLITS)
        steps += _model_steps(cfg, k)
    final = next_targets(cfg)
    if final is not None:
        steps += _targets_steps(cfg, len(cfg.iterations) + 1, final, splits=("train", "eval"))
    fingerprints = step_fingerprints(cfg)
    return [dataclasses.replace(step, fingerprint=fingerprints[step.name]) for step in steps]
