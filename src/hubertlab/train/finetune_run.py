"""A fine-tuning run: train(cfg, task) with the task the config names (resumable like
pretraining), then, for VTC, per-class thresholds tuned on the dev set with the run's best
checkpoint (OUT/thresholds.json, what `hubertlab predict` applies)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hubertlab.train import checkpoint as ckpt
from hubertlab.train.finetune_config import FinetuneConfig

log = logging.getLogger(__name__)

THRESHOLDS_FILE = "thresholds.json"


def best_checkpoint(out_dir: str | Path) -> Path:
    """The run's checkpoint with the lowest dev loss (the latest when none is marked)."""
    ckpt_dir = Path(out_dir) / "checkpoints"
    best = ckpt.read_best(ckpt_dir)
    if best is not None and (ckpt_dir / best["path"]).is_file():
        return ckpt_dir / best["path"]
    latest = ckpt.latest_checkpoint(ckpt_dir)
    if latest is None:
        raise FileNotFoundError(f"{ckpt_dir}: no checkpoint")
    return latest


def tune_thresholds_on_dev(cfg: FinetuneConfig, checkpoint: Path) -> dict[str, Any]:
    """Thresholds of the checkpoint's model tuned on the config's dev set (inferred as predict
    infers: windows with 75 % overlap), saved as OUT/thresholds.json."""
    from hubertlab.constants import FRAME_HOP
    from hubertlab.finetune.inference import tune_on_dev
    from hubertlab.finetune.postprocess import save_thresholds
    from hubertlab.tasks.vtc import read_recordings
    from hubertlab.train.validate import model_from_checkpoint

    data, classes = cfg.data, tuple(cfg.finetune.classes)
    model = model_from_checkpoint(checkpoint)
    dev = read_recordings(data.dev_manifest, data.dev_rttm, data.dev_uem, classes)
    window = round(data.window_seconds * 16000)
    hop = max(FRAME_HOP, window // 4 // FRAME_HOP * FRAME_HOP)
    thresholds = tune_on_dev(model, dev, classes, window_samples=window, hop_samples=hop)
    path = Path(cfg.run.out_dir) / THRESHOLDS_FILE
    save_thresholds(thresholds, path)
    log.info("thresholds tuned on dev with %s: %s", checkpoint.name, path)
    return {"thresholds": str(path), "checkpoint": str(checkpoint), **thresholds}


def run_finetune(cfg: FinetuneConfig) -> dict[str, Any]:
    """Train (or resume) the run, then tune VTC thresholds; returns the summary."""
    from hubertlab.tasks import build_task
    from hubertlab.train.loop import train

    result = train(cfg, build_task(cfg))
    if cfg.finetune.task == "vtc" and result.get("rank", 0) == 0:
        result["tuned"] = tune_thresholds_on_dev(cfg, best_checkpoint(cfg.run.out_dir))
    return result
