"""Voice type classification as a training task: multi-label BCE with logits per 20 ms frame
and class, summed over the frames that are not ignored (outside the UEM, past a recording's
end) and normalised by (those frames x classes). Metrics: frame BCE, and frame F1 per class at
threshold 0.5 with their macro mean. After training, per-class thresholds are tuned on the dev
set with the run's best checkpoint (OUT/thresholds.json, what `hubertlab predict` applies)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hubertlab.data.dataset import Batch
from hubertlab.data.rttm import read_rttm_files, read_uem
from hubertlab.data.window_batches import WindowBatches, WindowValidBatches
from hubertlab.data.windows import Recording, WindowDataset, load_recordings, window_and_hop
from hubertlab.finetune.f1 import f1_from_counts, macro_mean
from hubertlab.finetune.inference import tune_on_dev
from hubertlab.finetune.postprocess import save_thresholds
from hubertlab.tasks.base import TaskLoss
from hubertlab.tasks.finetune import FinetuneTask

log = logging.getLogger(__name__)

THRESHOLDS_FILE = "thresholds.json"


def read_recordings(manifest, rttm, uem, classes) -> list[Recording]:
    """Recordings of a manifest with their turns (labels checked against `classes`). With a
    UEM, a recording without a scored frame gets a warning and a set without any is an error:
    it would train at loss 0 and tune thresholds on nothing."""
    turns = read_rttm_files(rttm, classes=classes)
    recordings = load_recordings(manifest, turns, read_uem(uem) if uem is not None else None)
    if uem is not None:
        unscored = [r.fileid for r in recordings if r.scored_frames() == 0]
        for fileid in unscored:
            log.warning("%s: no frame of %s lies in its scored regions", uem, fileid)
        if len(unscored) == len(recordings):
            raise ValueError(
                f"{uem}: no frame of the {len(recordings)} recordings of {manifest} lies in "
                "its scored regions (regions outside the audio, or another corpus's UEM?)"
            )
    return recordings


class VtcTask(FinetuneTask):
    """Frame-level multi-label voice type classification (segma / VTC 2.x)."""

    names = {"vtc": "VTC"}
    kind = "vtc"
    predicts = "rttm"
    head_prefixes = ("head.", "layer_weights")
    default_dropout = 0.5  # segma's
    needed_data = ("train_rttm", "dev_rttm")
    own_keys = {
        "finetune": ("classes",),
        "data": ("train_rttm", "dev_rttm", "train_uem", "dev_uem", "window_seconds",
                 "batch_size", "windows_per_epoch"),
    }  # fmt: skip

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.classes = tuple(cfg.finetune.classes)
        self.metric_names = ("scored_frames",) + tuple(
            f"{kind}_{c}" for c in self.classes for kind in ("tp", "fp", "fn")
        )
        # The absent classes last logged: said again only when they change, not every
        # validation (a class missing from the dev set stays missing).
        self._absent_logged: tuple[str, ...] = ()

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        super().check_config(cfg)
        if cfg.finetune.vocab is not None:
            raise ValueError("finetune.vocab: only for task 'ctc'")

    def outputs(self) -> tuple[str, ...]:
        return self.classes

    def train_batches(self, *, rank: int, world_size: int, pin_memory: bool) -> WindowBatches:
        data = self.cfg.data
        recordings = read_recordings(
            data.train_manifest, data.train_rttm, data.train_uem, self.classes
        )
        dataset = WindowDataset(
            recordings,
            classes=self.classes,
            window_s=data.window_seconds,
            windows_per_epoch=data.windows_per_epoch or None,
            seed=self.cfg.run.seed,
        )
        return WindowBatches(
            dataset, data.batch_size, rank=rank, world_size=world_size,
            num_workers=data.num_workers,
        )  # fmt: skip

    def valid_batches(self, *, rank: int, world_size: int) -> WindowValidBatches:
        data = self.cfg.data
        recordings = read_recordings(data.dev_manifest, data.dev_rttm, data.dev_uem, self.classes)
        return WindowValidBatches(
            recordings,
            self.classes,
            window_samples=window_and_hop(data.window_seconds)[0],
            batch_size=data.batch_size,
            rank=rank,
            world_size=world_size,
            max_batches=data.max_valid_batches,
        )

    def normaliser(self, batch: Batch) -> int:
        return int((~batch.frame_ignore).sum()) * len(self.classes)

    def loss(self, model: nn.Module, batch: Batch, generator: torch.Generator) -> TaskLoss:
        logits, _ = model(batch.waveforms, batch.lengths, generator)
        frames = min(logits.shape[1], batch.frame_targets.shape[1])
        logits = logits[:, :frames].float()  # (batch, frames, classes)
        targets = batch.frame_targets[:, :frames]
        scored = ~batch.frame_ignore[:, :frames]  # (batch, frames)
        bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        loss_sum = (bce * scored[..., None]).sum()
        with torch.no_grad():
            on, truth = (logits > 0) & scored[..., None], (targets > 0.5) & scored[..., None]
            metrics: dict[str, Any] = {"scored_frames": scored.sum()}
            for c, name in enumerate(self.classes):
                metrics[f"tp_{name}"] = (on[..., c] & truth[..., c]).sum()
                metrics[f"fp_{name}"] = (on[..., c] & ~truth[..., c]).sum()
                metrics[f"fn_{name}"] = (~on[..., c] & truth[..., c]).sum()
        return TaskLoss(loss_sum=loss_sum, metrics=metrics)

    def summarize(self, totals: dict[str, float]) -> dict[str, float]:
        """Frame F1 per class at 0.5 and their macro mean. An absent class (no reference and
        no predicted frame) has no F1 (0 / 0 is not 1.0): it is left out of f1_macro and
        logged (once, until the absent classes change); with every class absent there is no
        f1_macro."""
        f1s = {
            name: f1_from_counts(*(totals[f"{k}_{name}"] for k in ("tp", "fp", "fn")))
            for name in self.classes
        }
        out = {f"f1_{name}": f1 for name, f1 in f1s.items() if f1 is not None}
        absent = tuple(name for name, f1 in f1s.items() if f1 is None)
        if absent and absent != self._absent_logged:
            self._absent_logged = absent
            log.info(
                "frame F1: %s absent (no reference and no predicted frame): undefined, left "
                "out of f1_macro", ", ".join(absent),
            )  # fmt: skip
        mean = macro_mean(f1s.values())
        if mean is not None:
            out["f1_macro"] = mean
        return out

    def after_training(self, best: Path, load_model: Callable[[Path], nn.Module]) -> dict[str, Any]:
        """Thresholds of the best checkpoint's model tuned on the dev set (inferred as predict
        infers: windows with 75 % overlap), saved as OUT/thresholds.json."""
        data = self.cfg.data
        model = load_model(best)
        dev = read_recordings(data.dev_manifest, data.dev_rttm, data.dev_uem, self.classes)
        window, hop = window_and_hop(data.window_seconds, overlap=0.75)
        thresholds = tune_on_dev(model, dev, self.classes, window_samples=window, hop_samples=hop)
        path = Path(self.cfg.run.out_dir) / THRESHOLDS_FILE
        save_thresholds(thresholds, path)
        log.info("thresholds tuned on dev with %s: %s", best.name, path)
        return {"tuned": {"thresholds": str(path), "checkpoint": str(best), **thresholds}}
