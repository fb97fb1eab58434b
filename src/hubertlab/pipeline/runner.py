"""Runs pipeline steps in order: a step whose output is complete is skipped, one that was
interrupted is run again and resumes from what it had committed (every step body is
resumable or cheap to redo). `DONE.json` in a step's folder marks it complete and records the
step's fingerprint (hubertlab.pipeline.fingerprint): a finished step whose config or inputs
changed since is stale, and is never reused silently."""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hubertlab.fileio import atomic_write_json
from hubertlab.pipeline.fingerprint import changed_keys

log = logging.getLogger(__name__)

DONE = "DONE.json"
State = Literal["done", "stale", "started", "pending"]


@dataclass(frozen=True)
class Step:
    name: str  # e.g. "iteration1/kmeans"
    out_dir: Path
    run: Callable[[], dict[str, Any] | None]  # returns a summary kept in DONE.json
    description: str = ""
    # What the result depends on, declared where the step is built: config values, input files
    # and the inputs of the steps it reads (hubertlab.pipeline.fingerprint's InputFile, Upstream).
    inputs: Mapping[str, Any] = field(default_factory=dict)
    # `inputs` hashed (JSON-able); recorded in DONE.json.
    fingerprint: dict[str, Any] = field(default_factory=dict)


class StaleStepError(ValueError):
    """A finished step no longer matches the config or its inputs."""


def step_state(step: Step) -> State:
    if (step.out_dir / DONE).is_file():
        return "stale" if stale_keys(step) else "done"
    return "started" if step.out_dir.is_dir() else "pending"


def read_done(step: Step) -> dict[str, Any]:
    return json.loads((step.out_dir / DONE).read_text())


def stale_keys(step: Step) -> list[str]:
    """What changed since the step finished ([] when nothing did). A DONE.json written before
    fingerprints were recorded cannot be checked: it is trusted, with a warning."""
    recorded = read_done(step).get("fingerprint")
    if recorded is None:
        log.warning("[%s] finished before fingerprints were recorded: not checked", step.name)
        return []
    return changed_keys(recorded, step.fingerprint)


def run_steps(steps: list[Step], *, redo_stale: bool = False) -> dict[str, dict[str, Any]]:
    """Run every step that is not done; return each step's DONE record. A stale step stops the
    run naming the step and what changed, or, with `redo_stale`, is redone from scratch (and,
    as their fingerprints include it, every step downstream of it)."""
    records = {}
    for step in steps:
        state = step_state(step)
        if state == "stale":
            changed = stale_keys(step)
            if not redo_stale:
                raise StaleStepError(
                    f"[{step.name}] finished with other settings or inputs; changed: "
                    f"{', '.join(changed[:8])}. Use another out_dir, restore the old config, or "
                    "run again with --redo-stale to redo it and every step after it that "
                    "depends on it"
                )
            log.warning("[%s] stale (%s): redone", step.name, ", ".join(changed[:8]))
            shutil.rmtree(step.out_dir)
            state = "pending"
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
            "fingerprint": step.fingerprint,
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
        extra = ""
        if state == "done":
            extra = f"{read_done(step)['seconds']:8.1f} s"
        elif state == "stale":
            extra = "changed: " + ", ".join(stale_keys(step)[:4])
        lines.append(f"{state:8s} {step.name:32s} {extra}")
    return "\n".join(lines)
