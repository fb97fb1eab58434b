"""What a pipeline step depends on, written down so that a finished step is only reused while
it still describes the same work: its config section, its input files and the fingerprints of
the steps it reads. A step whose recorded fingerprint differs is stale."""

from __future__ import annotations

from typing import Any

from hubertlab.data.masking import MaskConfig
from hubertlab.fingerprint import digest, file_fingerprint

__all__ = ["FORMAT_VERSION", "changed_keys", "digest", "file_fingerprint", "step_fingerprints"]

# Bump when a step's outputs change meaning or layout: every finished step becomes stale.
FORMAT_VERSION = 1


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """{"a.b.c": value} of a nested mapping (lists are values)."""
    if not isinstance(obj, dict):
        return {prefix: obj}
    out: dict[str, Any] = {}
    for key, value in obj.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two fingerprints."""
    a, b = flatten(old), flatten(new)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


# Training settings that change how a run is watched, not what it computes (keep_every: which
# checkpoints stay on disk; leaving it out also keeps runs finished before it existed valid).
_UNTRACKED_RUN_KEYS = (
    "progress_bar",
    "tensorboard",
    "log_every",
    "keep_freed_memory",
    "keep_every",
)


def fold_mask(train: dict[str, Any]) -> dict[str, Any]:
    """A training config's dict with its [mask] table written as fingerprints held it before
    the table existed (its non-default keys among model.overrides, nothing for defaults):
    runs finished then stay valid, whichever of the two places a config sets them in."""
    mask = train.pop("mask", {})
    changed = {k: v for k, v in mask.items() if v != getattr(MaskConfig, k)}
    if changed:
        train["model"]["overrides"] = {**train["model"]["overrides"], **changed}
    return train


def step_fingerprints(cfg: Any) -> dict[str, dict[str, Any]]:
    """The fingerprint of every step of a pipeline config, by step name. A step includes the
    digests of the steps it reads, so a change upstream makes everything downstream stale."""
    from hubertlab.config import to_dict
    from hubertlab.pipeline.steps import next_targets, predicts_units, train_config

    corpus = cfg.corpus
    files = {
        name: file_fingerprint(getattr(corpus, name))
        for name in ("train_manifest", "valid_manifest", "eval_manifest", "eval_phones")
    }
    files["eval_abx_item"] = file_fingerprint(corpus.eval_abx_item)
    # `curves` adds a step and changes no score: left out, so turning it on redoes nothing.
    abx_settings = {k: v for k, v in to_dict(cfg.abx).items() if k != "curves"}
    abx = {"abx": abx_settings, "seed": cfg.seed, "eval_manifest": files["eval_manifest"]}
    abx["eval_abx_item"] = files["eval_abx_item"]
    fps: dict[str, dict[str, Any]] = {"baseline/abx-mfcc": {**abx, "mfcc": ["cmvn", "raw"]}}
    iterations = list(cfg.iterations)
    final = next_targets(cfg)
    for k, it in enumerate(iterations + ([final] if final else []), start=1):
        source: dict[str, Any] = {"kind": it.features, "layer": it.layer}
        if it.features == "layer" and it.checkpoint is not None:
            source["checkpoint"] = file_fingerprint(it.checkpoint)
        elif it.features == "layer":
            source["model"] = digest(fps[f"iteration{k - 1}/select"])
            if it.layer == "best":
                source["abx"] = digest(fps[f"iteration{k - 1}/abx"])
        features = {"source": source, "train_manifest": files["train_manifest"]}
        features.update(dtype=cfg.feature_dtype, num_shards=cfg.executor.shards)
        kmeans = {"features": digest(features), "seed": cfg.seed, "num_units": it.num_units}
        kmeans.update(fraction=it.kmeans_fraction, max_iter=it.kmeans_max_iter)
        kmeans["max_memory_gb"] = it.kmeans_max_memory_gb
        units = {"kmeans": digest(kmeans), "manifests": files}
        prefix = f"iteration{k}/"
        if k > len(iterations) or predicts_units(cfg, k):
            fps.update({prefix + "features": features, prefix + "kmeans": kmeans})
            fps[prefix + "units"] = units
            fps[prefix + "quality"] = {"units": digest(units), "eval_phones": files["eval_phones"]}
        else:
            units = {"manifests": files}  # self-distillation: trained on the audio alone
        if k > len(iterations):
            break  # the last model's targets: no training
        train = fold_mask(to_dict(train_config(cfg, k)))
        for key in _UNTRACKED_RUN_KEYS:
            train["run"].pop(key, None)
        fps[prefix + "train"] = {"units": digest(units), "train": train}
        if it.init == "previous":
            fps[prefix + "train"]["init"] = digest(fps[f"iteration{k - 1}/select"])
        fps[prefix + "select"] = {"train": digest(fps[prefix + "train"])}
        fps[prefix + "abx"] = {**abx, "model": digest(fps[prefix + "select"])}
        fps[prefix + "abx-curve"] = {**abx, "train": digest(fps[prefix + "train"])}
        if not predicts_units(cfg, k):
            fps[prefix + "codebooks"] = {
                "model": digest(fps[prefix + "select"]),
                "eval_manifest": files["eval_manifest"],
                "eval_phones": files["eval_phones"],
            }
    return {name: {"format": FORMAT_VERSION, **fp} for name, fp in fps.items()}
