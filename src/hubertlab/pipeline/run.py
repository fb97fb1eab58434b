"""Entry points of `hubertlab pipeline` and `hubertlab status`."""

from __future__ import annotations

import logging
from pathlib import Path

from hubertlab.config import to_dict
from hubertlab.fileio import atomic_write_json
from hubertlab.pipeline.config import load_pipeline_config
from hubertlab.pipeline.report import write_report
from hubertlab.pipeline.runner import format_status, run_steps
from hubertlab.pipeline.steps import build_steps

log = logging.getLogger(__name__)


def run_pipeline(config_path: str | Path) -> Path:
    """Run every step not yet done; write the report. Returns the report's path."""
    cfg = load_pipeline_config(config_path)
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(cfg.out_dir / "pipeline.json", to_dict(cfg))
    steps = build_steps(cfg)
    run_steps(steps)
    report = write_report(cfg, steps)
    log.info("report: %s", report)
    return report


def pipeline_status(config_path: str | Path) -> str:
    cfg = load_pipeline_config(config_path)
    return format_status(build_steps(cfg))
