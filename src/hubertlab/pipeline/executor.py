"""Where the pipeline's work runs: shards as local processes, or SLURM jobs through submitit.

A shard function must be a picklable top-level function `fn(shard, num_shards, *args)`; it is
resumable by itself (feature and transcription shards are), so a re-run after a kill only
finishes what is missing."""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from hubertlab.slurm import SlurmConfig, make_executor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExecutorConfig:
    kind: Literal["local", "slurm"] = "local"
    # Local: shards run as this many processes at once (0 = one per core).
    workers: int = 0
    num_shards: int = 0  # 0 = as many shards as local workers (local) or 16 (slurm)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)

    def __post_init__(self) -> None:
        if self.workers < 0 or self.num_shards < 0:
            raise ValueError("workers and num_shards must be >= 0")

    @property
    def local_workers(self) -> int:
        return self.workers or (os.cpu_count() or 1)

    @property
    def shards(self) -> int:
        if self.num_shards:
            return self.num_shards
        return self.local_workers if self.kind == "local" else 16


def _limit_threads(threads: int) -> None:
    torch.set_num_threads(threads)


def run_shards(
    cfg: ExecutorConfig, fn: Callable[..., Any], args: tuple, log_dir: Path, name: str
) -> None:
    """Run fn(shard, num_shards, *args) for every shard and wait for all of them."""
    num_shards = cfg.shards
    if cfg.kind == "slurm":
        executor = make_executor(
            cfg.slurm,
            log_dir / "%j",
            name,
            gpus_per_node=min(1, cfg.slurm.gpus_per_node),
            require_cluster=False,
        )
        executor.update_parameters(slurm_array_parallelism=cfg.slurm.array_parallelism)
        jobs = executor.map_array(
            fn, range(num_shards), [num_shards] * num_shards, *[[a] * num_shards for a in args]
        )
        log.info("%s: submitted %d shard jobs (%s)", name, num_shards, jobs[0].job_id)
        for job in jobs:
            job.result()
        return
    workers = min(cfg.local_workers, num_shards)
    if workers == 1:
        for shard in range(num_shards):
            fn(shard, num_shards, *args)
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    # spawn: a forked child would inherit torch's thread pools in an undefined state.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_limit_threads, initargs=(threads,)
    ) as pool:
        futures = [pool.submit(fn, shard, num_shards, *args) for shard in range(num_shards)]
        for future in futures:
            future.result()
