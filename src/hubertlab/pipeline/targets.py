"""An iteration's targets: frame features of the training set -> k-means -> units of every
split -> their quality on the held-out corpus. The shard bodies are top-level functions, so
that shard processes (spawned, or SLURM jobs) can unpickle them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubertlab.data.alignments import read_phone_segments
from hubertlab.evaluate.units import unit_quality
from hubertlab.features.extractors import build_extractor
from hubertlab.features.store import extract_features_to_store
from hubertlab.fileio import atomic_write_json
from hubertlab.pipeline.config import IterationConfig, PipelineConfig
from hubertlab.pipeline.executor import run_shards
from hubertlab.pipeline.fingerprint import InputFile, Upstream
from hubertlab.pipeline.runner import Step
from hubertlab.units.assign import read_units, transcribe
from hubertlab.units.kmeans import fit_kmeans


@dataclass(frozen=True)
class FeatureSpec:
    """Picklable description of a feature source, so shard processes can rebuild it."""

    kind: str  # "mfcc" | "layer"
    checkpoint: str | None = None
    layer: int | None = None
    cmvn: bool = False

    def extractor(self):
        return build_extractor(self.kind, self.checkpoint, self.layer, cmvn=self.cmvn)


@dataclass(frozen=True)
class Shared:
    """Inputs every iteration's steps declare: the corpus files and the ABX settings."""

    # train/valid/eval manifests, eval phones, ABX item file ([longform]: the train and valid
    # manifests are the spans, fingerprinted by what they were made from)
    files: dict[str, InputFile | Upstream]
    abx: dict[str, Any]  # what an ABX score depends on besides the model


@dataclass(frozen=True)
class Trained:
    """What iteration k's model was made from, for the steps of iteration k+1 that read it."""

    model: Upstream  # the select step's inputs
    abx: Upstream  # its ABX per layer, which chooses a 'best' layer


def best_layer(abx_dir: Path) -> int:
    path = abx_dir / "best_layer.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no ABX result to choose the layer from")
    return int(json.loads(path.read_text())["layer"])


def feature_spec(cfg: PipelineConfig, k: int, it: IterationConfig) -> FeatureSpec:
    """Where iteration k's targets come from (resolved when the step runs: 'best' needs the
    previous iteration's ABX)."""
    if it.features == "mfcc":
        return FeatureSpec("mfcc", cmvn=it.cmvn)
    if it.checkpoint is not None:
        return FeatureSpec("layer", str(it.checkpoint), int(it.layer), it.cmvn)
    previous = cfg.iteration_dir(k - 1)
    layer = best_layer(previous / "abx") if it.layer == "best" else int(it.layer)
    return FeatureSpec("layer", str(previous / "model"), layer, it.cmvn)


# ----------------------------------------------------------------- shard bodies (picklable)
def features_shard(
    shard: int, num_shards: int, manifest: str, out: str, spec: FeatureSpec, dtype: str
) -> None:
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
    # The shard that finishes last merges all shards into out/units.jsonl.
    transcribe(manifest, kmeans_dir, store or spec.extractor(), out, shard, num_shards)


# ----------------------------------------------------------------- steps
def manifests_of(cfg: PipelineConfig) -> dict[str, Path]:
    paths = {
        "train": cfg.manifest("train"),
        "valid": cfg.manifest("valid"),
        "eval": cfg.corpus.eval_manifest,
    }
    return {split: path for split, path in paths.items() if path is not None}


def feature_inputs(
    cfg: PipelineConfig, it: IterationConfig, shared: Shared, previous: Trained | None
) -> dict[str, Any]:
    source: dict[str, Any] = {"kind": it.features, "layer": it.layer}
    if it.cmvn:  # only when set: the fingerprints of runs from before the key stay valid
        source["cmvn"] = True
    if it.features == "layer" and it.checkpoint is not None:
        source["checkpoint"] = InputFile(it.checkpoint)
    elif it.features == "layer":
        source["model"] = previous.model
        if it.layer == "best":
            source["abx"] = previous.abx
    return {
        "source": source,
        "train_manifest": shared.files["train_manifest"],
        "dtype": cfg.feature_dtype,
        "num_shards": cfg.executor.shards,
    }


def targets_steps(
    cfg: PipelineConfig,
    k: int,
    it: IterationConfig,
    shared: Shared,
    previous: Trained | None,
    *,
    splits,
) -> tuple[list[Step], dict[str, Any]]:
    """Iteration k's target steps, and the units step's inputs (what training reads)."""
    root = cfg.iteration_dir(k)
    store, kmeans_dir, units_dir = root / "features", root / "kmeans", root / "units"
    manifests = {s: p for s, p in manifests_of(cfg).items() if s in splits}

    def features() -> dict:
        spec = feature_spec(cfg, k, it)
        run_shards(
            cfg.executor,
            features_shard,
            (str(cfg.manifest("train")), str(store / "store"), spec, cfg.feature_dtype),
            root / "logs",
            f"it{k}-features",
        )
        return {"kind": spec.kind, "checkpoint": spec.checkpoint, "layer": spec.layer,
                "cmvn": spec.cmvn}  # fmt: skip

    def kmeans() -> dict:
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
        result = unit_quality(
            read_units(units_dir / "eval"), read_phone_segments(cfg.corpus.eval_phones)
        )
        atomic_write_json(root / "quality" / "quality.json", result)
        return result

    features_in = feature_inputs(cfg, it, shared, previous)
    kmeans_in = {"features": Upstream(features_in), "seed": cfg.seed, "num_units": it.num_units}
    kmeans_in.update(fraction=it.kmeans_fraction, max_iter=it.kmeans_max_iter)
    kmeans_in["max_memory_gb"] = it.kmeans_max_memory_gb
    units_in = {"kmeans": Upstream(kmeans_in), "manifests": shared.files}
    steps = [
        Step(f"iteration{k}/features", store, features, "frame features of the training set",
             inputs=features_in),
        Step(f"iteration{k}/kmeans", kmeans_dir, kmeans, f"k-means, k={it.num_units}",
             inputs=kmeans_in),
        Step(f"iteration{k}/units", units_dir, units, "units for " + ", ".join(manifests),
             inputs=units_in),
    ]  # fmt: skip
    if cfg.corpus.eval_phones is not None:
        steps.append(
            Step(
                f"iteration{k}/quality",
                root / "quality",
                quality,
                "PNMI and purities of the held-out corpus's units",
                inputs={"units": Upstream(units_in), "eval_phones": shared.files["eval_phones"]},
            )
        )
    return steps, units_in
