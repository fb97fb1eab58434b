"""Training metrics: a JSONL file always, the loggers [run] asks for (TensorBoard, W&B:
hubertlab.train.loggers), a loss-curve PNG."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hubertlab.fileio import atomic_write_text, save_figure
from hubertlab.train.loggers import Logger

log = logging.getLogger(__name__)


class MetricsLog:
    """Appends one JSON object per record to `path` ({"step", "split", ...metrics}), and hands
    the numbers to `loggers`, which it closes with itself.

    On resume from step S the records after S (written by the interrupted run and about to be
    produced again) are dropped first, so the file never holds a step twice."""

    def __init__(self, path: str | Path, *, resume_step: int = 0, loggers: Sequence[Logger] = ()):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_file():
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self.file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.loggers = list(loggers)

    def write(self, step: int, split: str, metrics: dict[str, Any]) -> None:
        self.file.write(json.dumps({"step": step, "split": split, **metrics}) + "\n")
        self.file.flush()
        numbers = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
        for logger in self.loggers:
            logger.write(step, split, numbers)

    def close(self) -> None:
        self.file.close()
        for logger in self.loggers:
            logger.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut by a kill: ignore it
                    continue
    return records


def plot_losses(metrics_path: str | Path, png_path: str | Path) -> None:
    """Training and validation loss against the step (matplotlib Agg; skipped if missing)."""
    try:
        import matplotlib  # lazy: slow to import; only the figure needs it

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # lazy: after matplotlib.use("Agg")
    except ImportError:
        log.debug("matplotlib is not installed: no loss curve")
        return
    records = read_metrics(metrics_path)
    fig, ax = plt.subplots(figsize=(7, 4))
    for split, style in (("train", "-"), ("valid", "o-")):
        points = [
            (r["step"], r["loss"]) for r in records if r.get("split") == split and "loss" in r
        ]
        if points:
            steps, losses = zip(*points, strict=True)
            ax.plot(steps, losses, style, label=split, markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, png_path)
