"""Pretraining config: one frozen dataclass per TOML table ([model], [data], [mask], [optim],
[run]).

Everything is checked when the file is loaded, before any data is read or any process started:
an unknown key or a bad value raises ConfigError naming the file and the key."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hubertlab.config import ConfigError, from_dict, read_toml
from hubertlab.constants import SAMPLE_RATE
from hubertlab.data.masking import MASK_KEYS, MaskConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSection:
    """Which model to train: a preset with overrides, or continued pretraining; which of its
    parameters train when."""

    # The objective (hubertlab.tasks): "hubert" masked prediction of units; "spidr" and
    # "dinosr" self-distillation (no unit labels).
    kind: Literal["hubert", "spidr", "dinosr"] = "hubert"
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

    def __post_init__(self) -> None:
        self._check_source()
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
class OptimSection:
    """AdamW and the learning-rate schedule (fairseq HuBERT base defaults)."""

    lr: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    weight_decay: float = 0.01
    warmup_steps: int | None = None  # overrides warmup_fraction when set
    warmup_fraction: float = 0.08  # of max_steps (fairseq base: 32k of 400k)
    schedule: Literal["linear", "cosine", "tri_stage", "constant"] = "linear"
    hold_fraction: float = 0.4  # tri_stage: steps at the peak after warm-up, fraction of max_steps
    final_lr_scale: float = 0.0  # lr at max_steps / lr (tri_stage: exponential decay, > 0)
    clip_grad_norm: float = 10.0  # 0: no clipping (the norm is still computed and logged)
    grad_accum: int = 1  # micro-batches per step and rank
    max_steps: int = 250_000

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas: must be in [0, 1), got {list(self.betas)}")
        if self.eps <= 0 or self.weight_decay < 0 or self.clip_grad_norm < 0:
            raise ValueError("eps must be > 0, weight_decay and clip_grad_norm >= 0")
        if self.grad_accum < 1 or self.max_steps < 1:
            raise ValueError(
                f"grad_accum and max_steps must be >= 1 (got {self.grad_accum}, {self.max_steps})"
            )
        if self.warmup_steps is not None and not 0 <= self.warmup_steps <= self.max_steps:
            raise ValueError(f"warmup_steps: must be in [0, max_steps], got {self.warmup_steps}")
        for name in ("warmup_fraction", "hold_fraction", "final_lr_scale"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name}: must be in [0, 1], got {getattr(self, name)}")
        if self.schedule == "tri_stage" and self.final_lr_scale <= 0:
            raise ValueError("final_lr_scale: must be > 0 for schedule 'tri_stage'")

    @property
    def num_warmup_steps(self) -> int:
        if self.warmup_steps is not None:
            return self.warmup_steps
        return int(self.warmup_fraction * self.max_steps)


@dataclass(frozen=True)
class RunSection:
    """Where and how: output folder, seed, precision, devices, logging, checkpoints."""

    out_dir: Path
    seed: int = 0
    precision: Literal["fp32", "bf16"] = "bf16"  # bf16 autocast, no loss scaling
    compile: bool = False  # torch.compile the model
    device: Literal["auto", "cpu", "cuda"] = "auto"
    fsdp: bool = False  # shard parameters with FSDP2 (large/xlarge on many GPUs) instead of DDP
    log_every: int = 10  # steps between metric lines
    ckpt_every: int = 1000  # steps between checkpoints (one is always written at the end)
    keep_last: int = 2  # checkpoints kept besides the best
    # Also keep every checkpoint whose step is a multiple of this (0: off): the points of an
    # ABX learning curve (`hubertlab abx --checkpoints`).
    keep_every: int = 0
    valid_every: int = 1000  # steps between validations (0: never; also runs at the end)
    tensorboard: bool = False
    progress_bar: bool = True
    max_nonfinite_in_a_row: int = 10  # skipped steps (NaN/inf loss or grad) before giving up
    num_threads: int = 0  # torch intra-op threads per process (0: torch's default)
    # Keep freed memory in the process (glibc): large activations are not page-faulted in
    # again every step (hubertlab.allocator); the process then holds its peak memory.
    keep_freed_memory: bool = True

    def __post_init__(self) -> None:
        for name in ("log_every", "ckpt_every", "keep_last", "max_nonfinite_in_a_row"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("valid_every", "num_threads", "keep_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")


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
    data = read_toml(path)
    for table, values in (overrides or {}).items():
        if not isinstance(data.get(table, {}), dict):
            raise ConfigError(f"{path}: {table} must be a table")
        data[table] = {**data.get(table, {}), **values}
    return train_config_from_dict(data, where=str(path))


def train_config_from_dict(data: dict[str, Any], where: str = "config") -> TrainConfig:
    """The same checks for a config held in memory (e.g. the one saved in a checkpoint); the
    model's task checks what it needs of the config too (its model config, its labels)."""
    from hubertlab.tasks import task_class

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
