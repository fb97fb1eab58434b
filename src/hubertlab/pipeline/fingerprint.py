"""Hashing of what a pipeline step depends on, so that a finished step is only reused while it
still describes the same work. Each step declares its inputs where it is built
(hubertlab.pipeline.steps): config values, input files (`InputFile`) and what the steps it
reads were made from (`Upstream`); here they become one JSON-able fingerprint. A step whose
recorded fingerprint differs is stale."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubertlab.data.masking import MaskConfig
from hubertlab.fingerprint import digest, file_fingerprint

__all__ = [
    "FORMAT_VERSION",
    "InputFile",
    "Upstream",
    "changed_keys",
    "fingerprints",
    "fold_mask",
    "drop_later_defaults",
]

# Bump when a step's outputs change meaning or layout: every finished step becomes stale.
FORMAT_VERSION = 1


@dataclass(frozen=True)
class InputFile:
    """A file (or folder) a step reads: fingerprinted by its bytes (None: not given)."""

    path: Path | None


@dataclass(frozen=True, eq=False)
class Upstream:
    """The inputs of work a step builds on (another step, or a stage with no step of its own):
    fingerprinted by their digest, so a change upstream makes everything downstream stale."""

    inputs: Mapping[str, Any]


def fingerprints(declared: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The fingerprint of each step from its declared inputs, in order. A file read by several
    steps is hashed once."""
    files: dict[Path | None, str | None] = {}
    return [{"format": FORMAT_VERSION, **_resolve(inputs, files)} for inputs in declared]


def _resolve(value: Any, files: dict[Path | None, str | None]) -> Any:
    """`value` with every InputFile replaced by its file's hash and every Upstream by the
    digest of its resolved inputs."""
    if isinstance(value, InputFile):
        if value.path not in files:
            files[value.path] = file_fingerprint(value.path)
        return files[value.path]
    if isinstance(value, Upstream):
        return digest(_resolve(value.inputs, files))
    if isinstance(value, Mapping):
        return {key: _resolve(item, files) for key, item in value.items()}
    return value


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


def fold_mask(train: dict[str, Any]) -> dict[str, Any]:
    """A training config's dict with its [mask] table written as fingerprints held it before
    the table existed (its non-default keys among model.overrides, nothing for defaults):
    runs finished then stay valid, whichever of the two places a config sets them in."""
    mask = train.pop("mask", {})
    changed = {k: v for k, v in mask.items() if v != getattr(MaskConfig, k)}
    if changed:
        train["model"]["overrides"] = {**train["model"]["overrides"], **changed}
    return train


# Training settings added after pipelines had finished runs: at their default they are left
# out of the training step's fingerprint, so those runs stay valid; any other value counts.
LATER_TRAIN_KEYS: dict[tuple[str, str], Any] = {("data", "speed_perturb"): []}


def drop_later_defaults(train: dict[str, Any]) -> dict[str, Any]:
    """A training config's dict without the LATER_TRAIN_KEYS that hold their default."""
    for (section, key), default in LATER_TRAIN_KEYS.items():
        table = train.get(section, {})
        if key in table and list(table[key]) == default:
            del table[key]
    return train
