"""Entry points of `hubertlab pipeline` and `hubertlab status`."""

from __future__ import annotations

import logging
from pathlib import Path

from hubertlab.config import to_dict
from hubertlab.data.alignments import read_item_file, read_phone_segments
from hubertlab.data.manifest import read_manifest
from hubertlab.fileio import atomic_write_json
from hubertlab.pipeline.config import load_pipeline_config
from hubertlab.pipeline.report import write_report
from hubertlab.pipeline.runner import format_status, run_steps, step_state
from hubertlab.pipeline.steps import build_steps

log = logging.getLogger(__name__)


def run_pipeline(config_path: str | Path, *, redo_stale: bool = False) -> Path:
    """Run every step not yet done; write the report. Returns the report's path. A step that
    finished under another config or other inputs stops the run before anything is written
    (or, with `redo_stale`, is redone with everything downstream of it)."""
    cfg = load_pipeline_config(config_path)
    check_inputs(cfg)
    steps = build_steps(cfg)
    if not redo_stale:
        for step in steps:
            if step_state(step) == "stale":
                run_steps([step])  # raises StaleStepError naming the step and the changes
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(cfg.out_dir / "pipeline.json", to_dict(cfg))
    run_steps(steps, redo_stale=redo_stale)
    report = write_report(cfg, steps)
    log.info("report: %s", report)
    return report


def pipeline_status(config_path: str | Path) -> str:
    cfg = load_pipeline_config(config_path)
    return format_status(build_steps(cfg))


def check_inputs(cfg) -> None:
    """Every input file of the run exists and reads, before the first step: a wrong path must
    not surface after the baseline and iteration 1's features."""
    corpus = cfg.corpus
    for name in ("train_manifest", "valid_manifest", "eval_manifest"):
        path = getattr(corpus, name)
        if path is not None:
            _readable(f"corpus.{name}", path, read_manifest)
    if corpus.eval_phones is not None:
        _readable("corpus.eval_phones", corpus.eval_phones, read_phone_segments)
    if corpus.eval_abx_item is not None:
        _readable("corpus.eval_abx_item", corpus.eval_abx_item, read_item_file)
    for k, it in enumerate(cfg.iterations, start=1):
        if it.checkpoint is not None and not Path(it.checkpoint).exists():
            raise FileNotFoundError(f"iterations[{k - 1}].checkpoint: not found: {it.checkpoint}")
    if cfg.longform is not None:
        for key in ("lid", "hours_table"):
            path = getattr(cfg.longform, key)
            if path is not None and not Path(path).is_file():
                raise FileNotFoundError(f"longform.{key}: not found: {path}")
    pretrained = (cfg.train.get("model") or {}).get("from_pretrained")
    if pretrained is not None and not Path(pretrained).exists():
        raise FileNotFoundError(f"train.model.from_pretrained: not found: {pretrained}")


def _readable(key: str, path: Path, reader) -> None:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{key}: not found: {path}")
    try:
        reader(path)
    except (ValueError, KeyError, UnicodeDecodeError) as e:
        raise ValueError(f"{key}: {path} cannot be read: {e}") from None
