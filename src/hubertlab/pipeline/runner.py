"""Runs pipeline steps in order: a step whose output is complete is skipped, one that was
interrupted is run again and resumes from what it had committed (every step body is
resumable or cheap to redo). `DONE.json` in a step's folder marks it complete."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hubertlab.fileio import atomic_write_json

log = logging.getLogger(__name__)

DONE = "DONE.json"
State = Literal["done", "started", "pending"]


@dataclass(frozen=True)
class Step:
    name: str  # e.g. "iteration1/kmeans"
    out_dir: Path
    run: Callable[[], dict[str, Any] | None]  # returns a summary kept in DONE.json
    description: str = ""


def step_state(step: Step) -> State:
    if (step.out_dir / DONE).is_file():
        return "done"
    return "started" if step.out_dir.is_dir() else "pending"


def read_done(step: Step) -> dict[str, Any]:
    return json.loads((step.out_dir / DONE).read_text())


def run_steps(steps: list[Step]) -> dict[str, dict[str, Any]]:
    """Run every step that is not done; return each step's DONE record."""
    records = {}
    for step in steps:
        state = step_state(step)
        if state == "done":
            log.info("[%s] done, skipped", step.name)
            records[step.name] = read_done(step)
            continue
        log.info(
            "[%s] %s%s",
            step.name,
            "resuming" if state == "started" else "starting",
            f": {step.description}" if step.description else "",
        )
        step.out_dir.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        summary = step.run() or {}
        record = {
            "step": step.name,
            "seconds": round(time.perf_counter() - start, 2),
            "resumed": state == "started",
            "summary": summary,
        }
        atomic_write_json(step.out_dir / DONE, record)
        records[step.name] = record
        log.info("[%s] finished in %.1f s", step.name, record["seconds"])
    return records


def format_status(steps: list[Step]) -> str:
    """One line per step: its state and, when done, its wall time."""
    lines = []
    for step in steps:
        state = step_state(step)
        extra = f"{read_done(step)['seconds']:8.1f} s" if state == "done" else ""
        lines.append(f"{state:8s} {step.name:32s} {extra}")
    return "\n".join(lines)
