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

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SlurmConfig:
    """SLURM settings; shards become an array job, training one multi-node job
    (through hubertlab.train.launch.submit)."""

    partition: str = ""
    account: str = ""
    qos: str = ""
    time_min: int = 240  # per job
    cpus_per_task: int = 8
    mem_gb: int = 64
    nodes: int = 1  # training job
    gpus_per_node: int = 1  # training job; shard jobs take one GPU each when > 0
    array_parallelism: int = 64
    extra: dict[str, Any] = field(default_factory=dict)  # passed to submitit as slurm_<key>

    def __post_init__(self) -> None:
        for name in ("time_min", "cpus_per_task", "mem_gb", "nodes", "array_parallelism"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.gpus_per_node < 0:
            raise ValueError(f"gpus_per_node must be >= 0, got {self.gpus_per_node}")


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
    import torch

    torch.set_num_threads(threads)


def run_shards(
    cfg: ExecutorConfig, fn: Callable[..., Any], args: tuple, log_dir: Path, name: str
) -> None:
    """Run fn(shard, num_shards, *args) for every shard and wait for all of them."""
    num_shards = cfg.shards
    if cfg.kind == "slurm":
        executor = _submitit_executor(
            cfg.slurm, log_dir, name, gpus=min(1, cfg.slurm.gpus_per_node)
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


def _submitit_executor(slurm: SlurmConfig, log_dir: Path, name: str, *, gpus: int, nodes: int = 1):
    try:
        import submitit
    except ImportError as e:
        raise ValueError(
            "executor.kind = 'slurm' needs submitit: pip install hubertlab[slurm]"
        ) from e
    executor = submitit.AutoExecutor(folder=str(log_dir / "%j"))
    params: dict[str, Any] = dict(
        name=f"hubertlab-{name}",
        timeout_min=slurm.time_min,
        nodes=nodes,
        tasks_per_node=max(1, gpus),
        gpus_per_node=gpus,
        cpus_per_task=slurm.cpus_per_task,
        mem_gb=slurm.mem_gb,
    )
    if slurm.partition:
        params["slurm_partition"] = slurm.partition
    if slurm.account:
        params["slurm_account"] = slurm.account
    if slurm.qos:
        params["slurm_qos"] = slurm.qos
    params.update({f"slurm_{k}": v for k, v in slurm.extra.items()})
    executor.update_parameters(**params)
    return executor
