"""`hubertlab finetune CONFIG.toml`: fine-tune an encoder for voice type classification (VTC)
or CTC speech recognition; resumes from the run's latest intact checkpoint. A VTC run then
tunes per-class thresholds on the dev set with its best checkpoint (OUT/thresholds.json)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

THRESHOLDS_FILE = "thresholds.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="TOML config (see configs/finetune-vtc.toml, -ctc.toml)")
    parser.add_argument("--out-dir", help="replace run.out_dir of the config")


def best_checkpoint(out_dir: Path) -> Path:
    """The run's checkpoint with the lowest dev loss (the latest when none is marked)."""
    from hubertlab.train import checkpoint as ckpt

    ckpt_dir = out_dir / "checkpoints"
    best = ckpt.read_best(ckpt_dir)
    if best is not None and (ckpt_dir / best["path"]).is_file():
        return ckpt_dir / best["path"]
    latest = ckpt.latest_checkpoint(ckpt_dir)
    if latest is None:
        raise FileNotFoundError(f"{ckpt_dir}: no checkpoint")
    return latest


def tune_thresholds_on_dev(cfg: Any, checkpoint: Path) -> dict[str, Any]:
    """Thresholds of the checkpoint's model tuned on the config's dev set, saved as JSON."""
    from hubertlab.constants import FRAME_HOP
    from hubertlab.finetune.inference import tune_on_dev
    from hubertlab.finetune.postprocess import save_thresholds
    from hubertlab.tasks.vtc import read_recordings
    from hubertlab.train.validate import model_from_checkpoint

    data, classes = cfg.data, tuple(cfg.finetune.classes)
    model = model_from_checkpoint(checkpoint)
    dev = read_recordings(data.dev_manifest, data.dev_rttm, data.dev_uem, classes)
    window = round(data.window_seconds * 16000)
    hop = max(FRAME_HOP, window // 4 // FRAME_HOP * FRAME_HOP)  # 75 % overlap, as predict
    thresholds = tune_on_dev(model, dev, classes, window_samples=window, hop_samples=hop)
    path = Path(cfg.run.out_dir) / THRESHOLDS_FILE
    save_thresholds(thresholds, path)
    return {"thresholds": str(path), "checkpoint": str(checkpoint), **thresholds}


def run_finetune(cfg: Any) -> dict[str, Any]:
    """Train (or resume) the run, then tune VTC thresholds; returns the summary."""
    from hubertlab.tasks import task_class
    from hubertlab.train.loop import train

    result = train(cfg, task_class(cfg.finetune.task)(cfg))
    if cfg.finetune.task == "vtc" and result.get("rank", 0) == 0:
        result["tuned"] = tune_thresholds_on_dev(cfg, best_checkpoint(Path(cfg.run.out_dir)))
    return result


def run(args: argparse.Namespace) -> int:
    from hubertlab.train.finetune_config import load_finetune_config

    overrides = {"run": {"out_dir": args.out_dir}} if args.out_dir else None
    cfg = load_finetune_config(args.config, overrides)
    result = run_finetune(cfg)
    if result.get("rank", 0) == 0:
        print(json.dumps({k: v for k, v in result.items() if k != "valid"}, default=str))
    return 0
