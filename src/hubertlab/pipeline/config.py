"""The pipeline config: the corpus, the iterations, the training settings they share, and where
the work runs. Relative paths are taken relative to the config file's folder. Each
iteration's TrainConfig (`train_config`) is built here too, so a bad key fails on load."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hubertlab.config import ConfigError, RunSection, from_dict, read_toml
from hubertlab.curate.policy import SegmentPolicy
from hubertlab.curate.select import CurationConfig
from hubertlab.pipeline.executor import ExecutorConfig
from hubertlab.tasks import PRETRAINING, pretraining_kind
from hubertlab.train.config import TrainConfig, train_config_from_dict
from hubertlab.units.assign import UNITS_NAME

# Keys of [train.data] the pipeline fills in itself.
PIPELINE_DATA_KEYS = (
    "train_manifest", "train_shards", "train_units", "num_units", "valid_manifest", "valid_units",
)  # fmt: skip


@dataclass(frozen=True)
class CorpusPaths:
    train_manifest: Path  # utterances; with [longform], the long recordings
    # Validation loss/accuracy and the best checkpoint. With [longform]: recordings, cut into
    # spans as the training ones are; left out, the spans are split (longform.valid_fraction).
    valid_manifest: Path | None = None
    # A held-out corpus for unit quality (needs phones) and ABX (needs the item file).
    eval_manifest: Path | None = None
    eval_phones: Path | None = None  # phones.jsonl, as the demo corpus writes
    eval_abx_item: Path | None = None  # ZeroSpeech item file

    def __post_init__(self) -> None:
        if self.eval_manifest is None and (self.eval_phones or self.eval_abx_item):
            raise ValueError("eval_phones / eval_abx_item need eval_manifest")


@dataclass(frozen=True)
class IterationConfig:
    """One HuBERT iteration: targets (features -> k-means -> units), then training."""

    # "mfcc": 39-d MFCC at 100 Hz (taken every 2nd frame); "layer": hidden states of a model.
    features: Literal["mfcc", "layer"] = "mfcc"
    # Layer of the previous iteration's model (or of `checkpoint`): a number, or "best" (by ABX).
    layer: int | str = "best"
    # Take layer features from this model instead of the previous iteration's (e.g. WavLM).
    checkpoint: Path | None = None
    # Per-utterance mean and variance normalisation of the features before k-means (and of
    # every split's features when they are assigned units): targets that follow the speaker less.
    cmvn: bool = False
    num_units: int = 100
    kmeans_fraction: float = 0.1  # of the training utterances, seeded
    kmeans_max_memory_gb: float = 2.0
    kmeans_max_iter: int = 100
    # "previous": continue from the previous iteration's best weights with a new head.
    init: Literal["scratch", "previous"] = "scratch"
    # Overrides of the [train] tables for this iteration, e.g. {optim = {max_steps = 400}}.
    train: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.layer, str) and self.layer != "best":
            raise ValueError(f"layer must be a number or 'best', got {self.layer!r}")
        if isinstance(self.layer, int) and self.layer < 0:
            raise ValueError(f"layer must be >= 0, got {self.layer}")
        if self.num_units < 2:
            raise ValueError(f"num_units must be >= 2, got {self.num_units}")
        if not 0 < self.kmeans_fraction <= 1:
            raise ValueError(f"kmeans_fraction must be in (0, 1], got {self.kmeans_fraction}")
        if self.kmeans_max_memory_gb <= 0 or self.kmeans_max_iter < 1:
            raise ValueError("kmeans_max_memory_gb must be > 0 and kmeans_max_iter >= 1")


@dataclass(frozen=True)
class LongFormSection:
    """[longform]: the recordings are long (hours, silence included), so the pipeline runs the
    long-form recipe before the iterations (docs/long-form.md): VAD, then BabyHuBERT's segment
    policy (2-30 s speech spans) or the UPS selection (10 s chunks up to an hour budget), and
    tar shards when asked. The iterations train on the spans."""

    vad: Literal["silero", "energy"] = "silero"
    selection: Literal["segments", "ups"] = "segments"
    # selection = "segments" (BabyHuBERT's policy, hubertlab.curate.policy)
    merge_gap_seconds: float = 2.0
    min_seconds: float = 2.0
    max_seconds: float = 30.0
    # selection = "ups" (hubertlab.curate.select): the budget, and language-ID results
    hours: float | None = None
    lid: Path | None = None
    hours_table: Path | None = None
    chunk_seconds: float = 10.0
    min_speech_seconds: float = 8.0
    min_density: float = 0.5
    group: Literal["archive", "file"] = "archive"
    # Without corpus.valid_manifest: this fraction of the spans validates (whole recordings
    # when there are MIN_VALID_RECORDINGS or more, so validation audio is unseen).
    valid_fraction: float = 0.05
    # > 0: each iteration streams its training spans from this many tar shards (HuBERT's
    # units in their JSON), as UPS and BabyHuBERT train at scale.
    shards: int = 0

    def __post_init__(self) -> None:
        self.policy()  # the checks of the policy and of the selection, with their messages
        if self.selection == "ups":
            if self.hours is None:
                raise ValueError("hours: the UPS selection needs an hour budget")
            self.curation()
        elif self.hours is not None or self.lid is not None or self.hours_table is not None:
            raise ValueError("hours, lid, hours_table: only with selection = 'ups'")
        if not 0 < self.valid_fraction < 1:
            raise ValueError(f"valid_fraction must be in (0, 1), got {self.valid_fraction}")
        if self.shards < 0:
            raise ValueError(f"shards must be >= 0, got {self.shards}")

    def policy(self) -> SegmentPolicy:
        return SegmentPolicy(self.merge_gap_seconds, self.min_seconds, self.max_seconds)

    def curation(self) -> CurationConfig:
        return CurationConfig(
            hours=self.hours, min_density=self.min_density, chunk_s=self.chunk_seconds,
            min_speech_s=self.min_speech_seconds, group=self.group,
        )  # fmt: skip


@dataclass(frozen=True)
class AbxSection:
    enabled: bool = True
    # Subsampling as the Libri-Light reference does (10 tokens, 5 X speakers); None: all tokens.
    max_tokens_per_group: int | None = None
    max_x_speakers: int | None = None
    speaker_modes: tuple[str, ...] = ("within", "across")
    # ABX learning curves: after training, every kept checkpoint of each iteration is scored
    # per layer (`hubertlab abx --checkpoints`; its own step, resumable) and the report shows
    # the curves. Each iteration then keeps every checkpoint it writes (train.run.keep_every
    # defaults to ckpt_every). Off by default: each checkpoint costs one ABX sweep.
    curves: bool = False


@dataclass(frozen=True)
class PipelineConfig:
    out_dir: Path
    corpus: CorpusPaths
    iterations: tuple[IterationConfig, ...]
    # The [train] tables shared by every iteration ([train.model], [train.optim], [train.run],
    # [train.data] minus the paths, which the pipeline fills in).
    train: dict[str, Any] = field(default_factory=dict)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    abx: AbxSection = field(default_factory=AbxSection)
    longform: LongFormSection | None = None
    seed: int = 0
    feature_dtype: Literal["float16", "float32"] = "float16"
    # Also cluster a layer of the last model (the last iteration's fixed layer number, else
    # the best by ABX): the units a next iteration would train on.
    final_units: bool = True

    def __post_init__(self) -> None:
        if not self.iterations:
            raise ValueError("iterations: give at least one [[iterations]] table")
        if self.corpus.valid_manifest is None and self.longform is None:
            raise ValueError("corpus.valid_manifest: missing (only [longform] splits its spans)")
        first = self.iterations[0]
        if first.features == "layer" and first.checkpoint is None:
            raise ValueError("iterations[0]: layer features need a checkpoint in iteration 1")
        if first.init == "previous":
            raise ValueError("iterations[0]: init = 'previous' needs a previous iteration")
        if any(
            (it.features == "layer" and it.layer == "best") and it.checkpoint is not None
            for it in self.iterations
        ):
            raise ValueError(
                "iterations: layer = 'best' is chosen by ABX of our own models; "
                "give a layer number with checkpoint"
            )
        if any((it.features == "layer" and it.layer == "best") for it in self.iterations) and not (
            self.abx.enabled and self.corpus.eval_abx_item is not None
        ):
            # Without an evaluation corpus nothing ranks the layers: the layer is configured.
            raise ValueError(
                "layer = 'best' needs abx.enabled and corpus.eval_abx_item; give a layer number"
            )

    def iteration_dir(self, k: int) -> Path:
        """Outputs of iteration k (1-based)."""
        return self.out_dir / f"iteration{k}"

    def manifest(self, split: Literal["train", "valid"]) -> Path:
        """What the iterations train and validate on: the corpus's manifests, or with
        [longform] the spans its steps cut from the recordings."""
        if self.longform is not None:
            return self.out_dir / "longform" / "spans" / f"{split}.csv"
        return self.corpus.train_manifest if split == "train" else self.corpus.valid_manifest


def _resolve(data: dict[str, Any], base: Path, keys: tuple[str, ...]) -> None:
    for key in keys:
        if isinstance(data.get(key), str) and not Path(data[key]).is_absolute():
            data[key] = str(base / data[key])


def load_pipeline_config(path: str | Path) -> PipelineConfig:
    """Read and check a pipeline TOML; every iteration's training config is built and checked
    too, so a bad key fails before any work, naming it."""
    path = Path(path)
    data = copy.deepcopy(read_toml(path))
    base = path.resolve().parent
    _resolve(data, base, ("out_dir",))
    if isinstance(data.get("corpus"), dict):
        _resolve(data["corpus"], base, tuple(f.name for f in dataclasses.fields(CorpusPaths)))
        if "valid_manifest" not in data["corpus"] and "longform" not in data:
            raise ConfigError(
                f"{path}: corpus: missing required key 'valid_manifest' (only [longform] "
                "splits its own validation spans)"
            )
    for it in data.get("iterations", []) if isinstance(data.get("iterations"), list) else []:
        if isinstance(it, dict):
            _resolve(it, base, ("checkpoint",))
    if isinstance(data.get("longform"), dict):
        _resolve(data["longform"], base, ("lid", "hours_table"))
    cfg = from_dict(PipelineConfig, data, where=str(path))
    for k in range(1, len(cfg.iterations) + 1):
        try:
            train_config(cfg, k)
        except ConfigError as e:
            raise ConfigError(f"{path}: iteration {k}: {e}") from None
    return cfg


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


def train_config(cfg: PipelineConfig, k: int) -> TrainConfig:
    """The TrainConfig of iteration k: [train] + the iteration's overrides + the paths."""
    it = cfg.iterations[k - 1]
    tables = train_tables(cfg, k)
    data = tables.setdefault("data", {})
    taken = [key for key in PIPELINE_DATA_KEYS if key in data]
    if taken:
        raise ConfigError(f"train.data.{taken[0]}: set by the pipeline, leave it out")
    streamed = cfg.longform is not None and cfg.longform.shards > 0
    if streamed:  # the units travel in the shards' JSON
        data["train_shards"] = str(cfg.iteration_dir(k) / "shards")
    else:
        data["train_manifest"] = str(cfg.manifest("train"))
    data["valid_manifest"] = str(cfg.manifest("valid"))
    if predicts_units(cfg, k):
        units = cfg.iteration_dir(k) / "units"
        data.update(num_units=[it.num_units], valid_units=[str(units / "valid" / UNITS_NAME)])
        if not streamed:
            data["train_units"] = [str(units / "train" / UNITS_NAME)]
    run = tables.setdefault("run", {})
    run["out_dir"] = str(cfg.iteration_dir(k) / "train")
    if cfg.abx.curves:  # the curves' points: every checkpoint unless told otherwise
        run.setdefault("keep_every", run.get("ckpt_every", RunSection.ckpt_every))
    run.setdefault("seed", cfg.seed)
    if it.init == "previous":
        model = tables.setdefault("model", {})
        model["from_pretrained"] = str(cfg.iteration_dir(k - 1) / "model")
        if predicts_units(cfg, k):
            model["new_head"] = True  # the new iteration's units are new clusters
    return train_config_from_dict(tables, where="train")
