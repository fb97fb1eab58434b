"""Typed configs: frozen dataclasses filled from TOML, checked on load with messages that name
the file and the key. Each stage defines its own dataclass; this module knows how to fill one
from a mapping, and holds the [optim] and [run] tables every training run shares (pretraining
and fine-tuning alike), so that each task can keep its own config beside it."""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value or key is wrong; the message names the file and the key."""


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from e


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {list(get_args(tp))}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} has a bad type")
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            pairs = enumerate(zip(value, args, strict=True))
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in pairs)
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return from_dict(tp, value, where=where)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        # TOML has inf and nan literals; no setting of ours means either, and nan slips
        # through every range check (nan > 0 and nan <= 0 are both false).
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a path string, got {value!r}")
        if not value.strip():  # Path("") is "." (the working directory): never what was meant
            raise ConfigError(f"{where}: empty path; give a file or leave the key out")
        return Path(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any], *, where: str = "config") -> T:
    """Build dataclass `cls` from `data`; unknown keys and bad values raise ConfigError naming
    `where.key`. The dataclass's __post_init__ may raise ValueError for range checks; it is
    re-raised with the location."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r} (known keys: {', '.join(sorted(fields))})"
        )
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(value, hints[name], f"{where}.{name}")
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{where}: missing required key {missing[0]!r}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{where}: {e}") from e


def to_dict(obj: Any) -> Any:
    """A dataclass config as plain TOML/JSON-friendly values (paths as strings)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def load_config(cls: type[T], path: str | Path) -> T:
    """Read TOML file `path` into dataclass `cls`, naming the file in every error."""
    return from_dict(cls, read_toml(path), where=str(path))


def read_toml_with_overrides(
    path: str | Path, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """TOML file `path` with `overrides` ({"run": {"out_dir": ...}}) replacing keys of its
    tables (used by the CLI and tests)."""
    data = read_toml(path)
    for table, values in (overrides or {}).items():
        if not isinstance(data.get(table, {}), dict):
            raise ConfigError(f"{path}: {table} must be a table")
        data[table] = {**data.get(table, {}), **values}
    return data


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
    # Where metrics go besides metrics.jsonl (hubertlab.train.loggers): "tensorboard"
    # (OUT/tensorboard) and "wandb" (Weights & Biases, `pip install hubertlab[wandb]`).
    loggers: tuple[Literal["tensorboard", "wandb"], ...] = ()
    tensorboard: bool = False  # the same as "tensorboard" in loggers (the key before loggers)
    wandb_project: str = "hubertlab"
    wandb_name: str | None = None  # the run's name in W&B; unset: out_dir
    # "offline" logs to OUT/wandb with no network (`wandb sync` uploads it later); WANDB_MODE
    # in the environment, when set, wins.
    wandb_mode: Literal["offline", "online"] = "offline"
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
        if len(set(self.loggers)) != len(self.loggers):
            raise ValueError(f"loggers: each logger once, got {list(self.loggers)}")
        if not self.wandb_project.strip():
            raise ValueError("wandb_project: must not be empty")

    @property
    def active_loggers(self) -> tuple[str, ...]:
        """`loggers`, with "tensorboard" added by the older `tensorboard = true`."""
        if self.tensorboard and "tensorboard" not in self.loggers:
            return ("tensorboard", *self.loggers)
        return self.loggers
