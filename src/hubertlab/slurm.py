"""SLURM through submitit: the one place where a submitit executor is built, so every setting
(partition, account, qos, constraint, memory, time, extra sbatch options) reaches every job:
`hubertlab train --slurm`, and the pipeline's shard arrays and training jobs.

A training job is a checkpointable callable: on timeout or preemption submitit calls its
`checkpoint`, which requeues the same job; train() then resumes from the latest checkpoint."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubertlab.config import to_dict
from hubertlab.train.config import train_config_from_dict
from hubertlab.train.loop import train

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SlurmConfig:
    """SLURM settings. Shards run as an array job (one task, one GPU each when gpus_per_node
    > 0); training as one job of nodes x gpus_per_node tasks."""

    partition: str = ""
    account: str = ""
    qos: str = ""
    constraint: str = ""  # e.g. "h100"
    time_min: int = 240  # per job; a training job is requeued when it runs out
    cpus_per_task: int = 8
    mem_gb: int = 64  # per node
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


def make_executor(
    slurm: SlurmConfig,
    folder: str | Path,
    name: str,
    *,
    nodes: int = 1,
    gpus_per_node: int = 0,
    local: bool = False,
    require_cluster: bool = True,
) -> Any:
    """A submitit executor for `nodes` x max(1, gpus_per_node) tasks with every setting of
    `slurm`. `local` runs the job on this machine with submitit's LocalExecutor (no cluster:
    for trying the path; one node only). Without `require_cluster`, submitit's own fallback
    runs the jobs here when there is no SLURM (shard jobs: the same result either way)."""
    try:
        import submitit  # lazy: optional (hubertlab[slurm]); a missing one is a clear error
    except ImportError as e:
        raise ValueError("SLURM jobs need submitit: pip install hubertlab[slurm]") from e
    tasks_per_node = max(1, gpus_per_node)
    if local:
        if nodes != 1:
            raise ValueError("--nodes: the local executor runs on one node only")
        executor = submitit.LocalExecutor(folder=str(folder))
        executor.update_parameters(
            timeout_min=slurm.time_min, tasks_per_node=tasks_per_node, gpus_per_node=gpus_per_node
        )
        return executor
    executor = submitit.AutoExecutor(folder=str(folder))
    if require_cluster and executor.cluster != "slurm":
        raise ValueError("no SLURM found here (sbatch missing); try the local executor")
    params: dict[str, Any] = dict(
        name=f"hubertlab-{name}",
        timeout_min=slurm.time_min,
        nodes=nodes,
        tasks_per_node=tasks_per_node,
        gpus_per_node=gpus_per_node,
        cpus_per_task=slurm.cpus_per_task,
        mem_gb=slurm.mem_gb,
    )
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(slurm, key):
            params[f"slurm_{key}"] = getattr(slurm, key)
    params.update({f"slurm_{k}": v for k, v in slurm.extra.items()})
    executor.update_parameters(**params)
    return executor


class TrainJob:
    """A picklable, checkpointable callable that submitit runs in every task of the job."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config  # plain dict: survives pickling across versions of our classes

    def __call__(self) -> dict[str, Any]:
        import submitit  # lazy: optional (hubertlab[slurm]), present where a job runs

        env = submitit.JobEnvironment()
        if env.num_tasks > 1:
            submitit.helpers.TorchDistributedEnvironment().export(overwrite=True)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        return train(train_config_from_dict(self.config, where="submitted config"))

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit  # lazy: optional (hubertlab[slurm]), present where a job runs

        log.info("job interrupted: requeueing; training resumes from the latest checkpoint")
        return submitit.helpers.DelayedSubmission(TrainJob(self.config))


def submit_training(
    cfg: Any, slurm: SlurmConfig, *, folder: str | Path | None = None, local: bool = False
) -> Any:
    """Submit training (a TrainConfig) as one job of slurm.nodes x slurm.gpus_per_node tasks;
    returns the submitit Job."""
    folder = Path(folder) if folder is not None else Path(cfg.run.out_dir) / "submitit"
    executor = make_executor(
        slurm, folder, "train", nodes=slurm.nodes, gpus_per_node=slurm.gpus_per_node, local=local
    )
    job = executor.submit(TrainJob(to_dict(cfg)))
    log.info("submitted job %s (logs in %s)", job.job_id, folder)
    return job
