"""Pretraining config: one frozen dataclass per TOML table ([model], [data], [mask];
[optim] and [run] are hubertlab.config's, shared with fine-tuning).

Everything is checked when the file is loaded, before any data is read or any process started:
an unknown key or a bad value raises ConfigError naming the file and the key."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hubertlab.config import (
    ConfigError,
    OptimSection,
    RunSection,
    from_dict,
    read_toml_with_overrides,
)
from hubertlab.constants import SAMPLE_RATE
from hubertlab.data.masking import MASK_KEYS, MaskConfig
from hubertlab.data.speed import check_speeds
from hubertlab.tasks import DEFAULT_KIND, PRETRAINING_KINDS, task_class

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSection:
    """Which model to train: a preset with overrides, or continued pretraining; which of its
    parameters train when."""

    # The objective (hubertlab.tasks.PRETRAINING): "hubert" masked prediction of units; "spidr"
    # and "dinosr" self-distillation (no unit labels).
    kind: Literal[PRETRAINING_KINDS] = DEFAULT_KIND
    preset: Literal["tiny", "base", "large", "xlarge"] = "base"
    # Any field of the model's config, e.g. {hidden_dim = 128, num_layers = 2} (backbone fields
    # may be given flat). num_units comes from [data].
    overrides: dict[str, Any] = field(default_factory=dict)
    # Start from these weights (our checkpoint or save_pretrained dir, transformers, fairseq...);
    # the head gets fresh unit embeddings when the unit counts differ; the optimizer starts anew.
    from_pretrained: Path | None = None
    # With from_pretrained: a fresh head (projection + unit embeddings) even when the unit
    # counts match, as the next HuBERT iteration needs (its units are new clusters).
    new_head: bool = False
    # The CNN stops training from this step on (0: frozen from the start; unset: never).
    freeze_cnn_from_step: int | None = None
    # Only the head trains for the first N steps (UPS continued pretraining: one epoch).
    head_only_steps: int = 0
    # spidr/dinosr: warn when the mean target perplexity of a log window falls below this
    # (codebook collapse); 0: a sixteenth of the codebook size.
    collapse_perplexity: float = 0.0

    def __post_init__(self) -> None:
        if "num_units" in self.overrides:
            raise ValueError("overrides.num_units: set data.num_units instead")
        if self.freeze_cnn_from_step is not None and self.freeze_cnn_from_step < 0:
            raise ValueError(f"freeze_cnn_from_step: must be >= 0, got {self.freeze_cnn_from_step}")
        if self.collapse_perplexity < 0:
            raise ValueError(f"collapse_perplexity: must be >= 0, got {self.collapse_perplexity}")
        if self.head_only_steps < 0:
            raise ValueError(f"head_only_steps: must be >= 0, got {self.head_only_steps}")


@dataclass(frozen=True)
class DataSection:
    """Training and validation audio, their units, crops and batches."""

    # The training audio: a manifest of files (or spans), or WebDataset tar shards (one of the
    # two). train_shards: a folder of `hubertlab shard`, a path, a URL webdataset opens, or a
    # brace pattern ("shards/shard-{000000..000031}.tar"); streamed (hubertlab.data.stream).
    train_manifest: Path | None = None
    train_shards: str | None = None
    # One JSONL unit file per unit set ({"fileid": ..., "units": [...]}); several = ensemble.
    # Only for objectives that predict units (hubert); self-distillation needs none. With
    # train_shards the units are those of the shards' JSON (one set; give only num_units).
    train_units: tuple[Path, ...] = ()
    num_units: tuple[int, ...] = ()  # units per set (k of each k-means)
    # train_shards: raw samples in each worker's shuffle buffer (UPS uses 5,000; 1,000 FLAC
    # samples of 10 s hold ~200 MB per worker)
    shuffle_buffer: int = 1000
    valid_manifest: Path | None = None
    valid_units: tuple[Path, ...] = ()
    min_crop_seconds: float = 2.0  # shorter files are left out (fairseq min_sample_size)
    max_crop_seconds: float = 15.625  # longer files are randomly cropped (250,000 samples)
    batch_seconds: float = 87.5  # audio per batch and rank, padding included (1.4M samples)
    batching: Literal["crop", "pad"] = "crop"  # crop to the shortest in the batch, or zero-pad
    num_workers: int = 2  # decoding processes per rank (0: in the training process)
    max_valid_batches: int = 0  # 0: the whole validation set
    # Speed perturbation of training utterances: one of these factors per utterance and epoch
    # (e.g. Kaldi's [0.9, 1.0, 1.1]); units are stretched alike. Empty: none.
    speed_perturb: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        self._check_source()
        check_speeds(self.speed_perturb, "data.speed_perturb")
        if any(k < 1 for k in self.num_units):
            raise ValueError(f"num_units: must be positive, got {list(self.num_units)}")
        if self.valid_manifest is not None and len(self.valid_units) != len(self.num_units):
            raise ValueError(
                "valid_units: needs one file per training unit set "
                f"({len(self.num_units)}), labelled with the same k-means"
            )
        if not 0 < self.min_crop_seconds <= self.max_crop_seconds:
            raise ValueError(
                "min_crop_seconds: must be > 0 and <= max_crop_seconds "
                f"(got {self.min_crop_seconds}, {self.max_crop_seconds})"
            )
        if self.batch_seconds < self.max_crop_seconds:
            raise ValueError(
                f"batch_seconds: {self.batch_seconds} is less than max_crop_seconds "
                f"{self.max_crop_seconds}"
            )
        for name in ("num_workers", "max_valid_batches", "shuffle_buffer"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")

    def _check_source(self) -> None:
        """Files or shards, and the unit sets that go with them."""
        if self.train_manifest is not None and self.train_shards is not None:
            raise ValueError("train_shards: give either train_manifest or train_shards, not both")
        if self.train_manifest is None and self.train_shards is None:
            raise ValueError("train_manifest: missing (or give train_shards)")
        if self.train_shards is None:
            if len(self.num_units) != len(self.train_units):
                raise ValueError(
                    f"num_units: {len(self.num_units)} entries for {len(self.train_units)} unit "
                    "files"
                )
            return
        if self.train_units:
            raise ValueError(
                "train_units: with train_shards the units are those in the shards' JSON "
                "(hubertlab shard --units); give only num_units"
            )
        if len(self.num_units) > 1:
            raise ValueError(f"num_units: shards hold one unit set, got {list(self.num_units)}")

    @property
    def min_samples(self) -> int:
        return int(round(self.min_crop_seconds * SAMPLE_RATE))

    @property
    def max_samples(self) -> int:
        return int(round(self.max_crop_seconds * SAMPLE_RATE))

    @property
    def batch_samples(self) -> int:
        return int(round(self.batch_seconds * SAMPLE_RATE))


@dataclass(frozen=True)
class TrainConfig:
    """A training run: the model and what trains when, the data and its span mask, the
    optimizer, the run."""

    data: DataSection
    run: RunSection
    model: ModelSection = field(default_factory=ModelSection)
    mask: MaskConfig = field(default_factory=MaskConfig)  # drawn for the tasks that mask
    optim: OptimSection = field(default_factory=OptimSection)


def load_train_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read and check a TOML config. `overrides` ({"run": {"out_dir": ...}}) replace keys of
    the file's tables (used by the CLI and tests)."""
    return train_config_from_dict(read_toml_with_overrides(path, overrides), where=str(path))


def train_config_from_dict(data: dict[str, Any], where: str = "config") -> TrainConfig:
    """The same checks for a config held in memory (e.g. the one saved in a checkpoint); the
    model's task checks what it needs of the config too (its model config, its labels)."""
    cfg = from_dict(TrainConfig, move_mask_keys(data, where), where=where)
    try:
        task_class(cfg.model.kind).check_config(cfg)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None
    return cfg


def move_mask_keys(data: dict[str, Any], where: str) -> dict[str, Any]:
    """`data` with the mask keys of [model.overrides] (where they lived before [mask]) moved
    to [mask], each with a deprecation warning; a key given in both places is an error."""
    model = data.get("model")
    overrides = model.get("overrides") if isinstance(model, dict) else None
    if not isinstance(overrides, dict) or not set(MASK_KEYS) & set(overrides):
        return data
    mask = data.get("mask", {})
    if not isinstance(mask, dict):
        return data  # from_dict names the bad table
    mask, overrides = dict(mask), dict(overrides)
    for key in MASK_KEYS:
        if key not in overrides:
            continue
        if key in mask:
            raise ConfigError(
                f"{where}: model.overrides.{key} and mask.{key} both set; keep only mask.{key}"
            )
        log.warning(
            "%s: model.overrides.%s is deprecated; it is read as mask.%s (move it to [mask])",
            where, key, key,
        )  # fmt: skip
        mask[key] = overrides.pop(key)
    return {**data, "model": {**model, "overrides": overrides}, "mask": mask}
