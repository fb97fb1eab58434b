"""Fine-tuning config ([finetune], [data], [optim], [run]): voice type classification (VTC) or
CTC speech recognition on top of any encoder from_pretrained reads, a random one, or MFCC.

[optim] and [run] are hubertlab.config's, shared with pretraining. What differs between the
tasks (the keys each needs, the keys only it reads) is declared by the task classes
(tasks/vtc.py, tasks/ctc.py). Everything is checked when the file is read; an error names the
file and the key."""

from __future__ import annotations

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
from hubertlab.data.rttm import VTC_CLASSES
from hubertlab.models.config import BACKBONE_FIELDS
from hubertlab.tasks import FINETUNING, FINETUNING_KINDS, task_class

# Encoders that are not checkpoint paths.
RANDOM_ENCODER, MFCC_ENCODER = "random", "mfcc"


@dataclass(frozen=True)
class FinetuneSection:
    """The task, the encoder and the head."""

    task: Literal[FINETUNING_KINDS]  # a name of hubertlab.tasks.FINETUNING
    # A checkpoint (ours, transformers, torchaudio, fairseq; a folder or file), "random" (the
    # preset + overrides, randomly initialised: the baseline pretraining must beat) or "mfcc"
    # (a small frame model on 39-d MFCC at 50 Hz, models.finetune.MfccEncoder).
    encoder: str
    preset: Literal["tiny", "base", "large", "xlarge"] = "base"  # encoder "random" only
    # Backbone fields: the architecture of a random encoder, or dropouts / layerdrop of a
    # pretrained one (e.g. {layerdrop = 0.1}).
    overrides: dict[str, Any] = field(default_factory=dict)
    mfcc_dim: int = 256  # encoder "mfcc": its width, set it to the compared encoder's hidden_dim
    # The hidden state the head reads: "weighted" (a learned softmax-weighted sum of all of
    # them) or a layer number (0: the Transformer input; num_layers: the last, after the
    # pre-LN final norm).
    layer: int | Literal["weighted"] = "weighted"
    classes: tuple[str, ...] = VTC_CLASSES  # vtc: one output per class, RTTM labels
    vocab: Path | None = None  # ctc: a vocab.json; unset: built from the training transcripts
    dropout: float | None = None  # before the head; unset: the task's (0.5 vtc (segma), 0.1 ctc)
    freeze_cnn: bool = True  # the CNN never trains (both recipes)
    # Only the head (and the layer weights) train for the first N steps: the usual CTC recipe
    # (fairseq freeze_finetune_updates); 0: the encoder trains from the start.
    freeze_encoder_steps: int = 0

    def __post_init__(self) -> None:
        if not self.encoder:
            raise ValueError("encoder: give a checkpoint path, 'random' or 'mfcc'")
        if isinstance(self.layer, int) and self.layer < 0:
            raise ValueError(f"layer: must be >= 0 or 'weighted', got {self.layer}")
        if not self.classes or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes: need distinct class names, got {list(self.classes)}")
        if any(not c or any(ch.isspace() for ch in c) for c in self.classes):
            raise ValueError(f"classes: names must be non-empty without spaces: {self.classes}")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ValueError(f"dropout: must be in [0, 1), got {self.dropout}")
        if self.freeze_encoder_steps < 0 or self.mfcc_dim < 1:
            raise ValueError("freeze_encoder_steps must be >= 0 and mfcc_dim >= 1")
        unknown = sorted(set(self.overrides) - BACKBONE_FIELDS)
        if unknown:
            raise ValueError(
                f"overrides: {unknown[0]!r} is not a backbone field (known: "
                f"{', '.join(sorted(BACKBONE_FIELDS))})"
            )


@dataclass(frozen=True)
class FinetuneDataSection:
    """Training and dev data: recordings with RTTM (vtc) or utterances with transcripts (ctc)."""

    train_manifest: Path
    dev_manifest: Path
    train_rttm: Path | None = None  # vtc: one file or a folder of *.rttm
    dev_rttm: Path | None = None
    train_uem: Path | None = None  # vtc: scored regions (unset: everything)
    dev_uem: Path | None = None
    train_transcripts: Path | None = None  # ctc: TSV fileid<TAB>text or JSONL
    dev_transcripts: Path | None = None
    window_seconds: float = 4.0  # vtc: training and inference windows (199 frames at 4 s)
    batch_size: int = 32  # vtc: windows per batch and rank
    windows_per_epoch: int = 0  # vtc: 0 = about one pass over the training audio
    batch_seconds: float = 60.0  # ctc: audio per batch and rank, padding included
    max_utterance_seconds: float = 30.0  # ctc: longer utterances are left out (never cropped)
    num_workers: int = 1  # decoding processes per rank (0: in the training process)
    max_valid_batches: int = 0  # 0: the whole dev set

    def __post_init__(self) -> None:
        if not 0.1 <= self.window_seconds <= 60:
            raise ValueError(f"window_seconds: must be in [0.1, 60], got {self.window_seconds}")
        if self.batch_size < 1 or self.windows_per_epoch < 0:
            raise ValueError("batch_size must be >= 1 and windows_per_epoch >= 0")
        if not 0 < self.max_utterance_seconds <= self.batch_seconds:
            raise ValueError(
                f"max_utterance_seconds ({self.max_utterance_seconds}) must be > 0 and <= "
                f"batch_seconds ({self.batch_seconds})"
            )
        if self.num_workers < 0 or self.max_valid_batches < 0:
            raise ValueError("num_workers and max_valid_batches must be >= 0")


@dataclass(frozen=True)
class FinetuneConfig:
    """A fine-tuning run; train(cfg, task) reads its [optim] and [run] like pretraining's."""

    finetune: FinetuneSection
    data: FinetuneDataSection
    run: RunSection
    optim: OptimSection = field(default_factory=OptimSection)


def _check_task_keys(data: dict[str, Any], where: str) -> None:
    """Refuse a key only another task reads (named, with the task it belongs to): in this
    task's file it is a mistake (it used to fail on another key's range check, or be
    ignored)."""
    task = data.get("finetune", {}).get("task") if isinstance(data.get("finetune"), dict) else None
    for other, cls in FINETUNING.items():
        if task not in FINETUNING or other == task:
            continue
        for table, keys in cls.own_keys.items():
            section = data.get(table)
            found = [k for k in keys if isinstance(section, dict) and k in section]
            if found:
                raise ConfigError(
                    f"{where}: {table}.{found[0]}: a key of task {other!r}; this config's "
                    f"task is {task!r} (remove it)"
                )


def finetune_config_from_dict(data: dict[str, Any], where: str = "config") -> FinetuneConfig:
    """Build and check a FinetuneConfig (also the one saved in a checkpoint); the task checks
    what it needs of it."""
    cfg = from_dict(FinetuneConfig, data, where=where)
    try:
        task_class(cfg.finetune.task).check_config(cfg)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None
    return cfg


def load_finetune_config(
    path: str | Path, overrides: dict[str, Any] | None = None
) -> FinetuneConfig:
    """Read a fine-tuning TOML file; `overrides` ({"run": {"out_dir": ...}}) replace keys of
    its tables. Relative paths stay relative to the working directory, as in pretraining."""
    data = read_toml_with_overrides(path, overrides)
    _check_task_keys(data, str(path))
    return finetune_config_from_dict(data, where=str(path))
