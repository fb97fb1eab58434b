"""Where training metrics go besides metrics.jsonl (which is always written): TensorBoard and
Weights & Biases, chosen by `[run] loggers`. Only rank 0 opens them (the loop asks for them on
the main process only).

W&B runs offline unless told otherwise (`[run] wandb_mode`, or WANDB_MODE in the environment,
which wins): a cluster node without network logs to OUT/wandb/, and `wandb sync OUT/wandb/...`
uploads it later. A resumed run continues the same W&B run: its id is kept in OUT/wandb_id.txt."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Protocol

from hubertlab.config import ConfigError, RunSection
from hubertlab.fileio import atomic_write_text

log = logging.getLogger(__name__)

WANDB_ID_FILE = "wandb_id.txt"


class Logger(Protocol):
    """One destination of the metrics MetricsLog writes."""

    def write(self, step: int, split: str, metrics: dict[str, float]) -> None: ...

    def close(self) -> None: ...


class TensorBoardLogger:
    """Scalars as `<split>/<name>` in OUT/tensorboard; a resumed run purges the steps after
    the checkpoint it resumes from (they are about to be logged again)."""

    def __init__(self, log_dir: Path, *, resume_step: int):
        # lazy: tensorboard is an optional extra
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(log_dir), purge_step=resume_step + 1)

    def write(self, step: int, split: str, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(f"{split}/{name}", value, step)

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    """Scalars as `<split>/<name>` in a W&B run (see the module docstring for mode and id)."""

    def __init__(self, run: RunSection, *, config: dict[str, Any]):
        import wandb  # lazy: wandb is an optional extra (hubertlab[wandb])

        out_dir = Path(run.out_dir)
        id_file = out_dir / WANDB_ID_FILE
        run_id = id_file.read_text().strip() if id_file.is_file() else None  # None: a new one
        # The environment wins over the config, as wandb documents for WANDB_MODE.
        mode = None if os.environ.get("WANDB_MODE") else run.wandb_mode
        self.run = wandb.init(
            project=run.wandb_project,
            name=run.wandb_name or str(out_dir),
            id=run_id,
            resume="allow",
            dir=str(out_dir),
            mode=mode,
            config=config,
        )
        atomic_write_text(id_file, self.run.id + "\n")

    def write(self, step: int, split: str, metrics: dict[str, float]) -> None:
        # Steps below the run's last (replayed after a resume) are dropped by wandb, with a
        # warning: the interrupted run logged them already.
        self.run.log({f"{split}/{name}": value for name, value in metrics.items()}, step=step)

    def close(self) -> None:
        self.run.finish()


def open_loggers(run: RunSection, *, resume_step: int, config: dict[str, Any]) -> list[Logger]:
    """The loggers `run` asks for (`config`: the resolved training config, shown by W&B).
    A missing tensorboard only warns (as before `loggers` existed); a missing wandb is an
    error, raised before any step is taken."""
    out_dir = Path(run.out_dir)
    loggers: list[Logger] = []
    if "tensorboard" in run.active_loggers:
        try:
            loggers.append(TensorBoardLogger(out_dir / "tensorboard", resume_step=resume_step))
        except ImportError:  # tensorboard is an optional extra
            log.warning("tensorboard is not installed; logging to metrics.jsonl only")
    if "wandb" in run.active_loggers:
        try:
            # lazy: only checks that the optional extra is installed
            import wandb  # noqa: F401
        except ImportError as e:
            raise ConfigError(
                "[run] loggers lists 'wandb', which is not installed: `pip install "
                "hubertlab[wandb]` (or `pip install wandb`), or remove it from [run] loggers"
            ) from e
        loggers.append(WandbLogger(run, config=config))
    return loggers
