"""Where training runs: one process, torchrun (DDP / FSDP2), or SLURM through submitit.

torchrun and submitit both describe the job through the standard torch.distributed variables
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT); train() reads them through
setup_distributed() and nothing else does."""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from hubertlab.config import to_dict
from hubertlab.train.config import TrainConfig, train_config_from_dict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(preference: str, local_rank: int = 0) -> torch.device:
    """ "auto": the local GPU when there is one, else the CPU."""
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ValueError("run.device is 'cuda' but no CUDA device is available")
        # submitit may narrow CUDA_VISIBLE_DEVICES to the task's own GPU: index modulo count.
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def setup_distributed(device_preference: str) -> DistInfo:
    """Join the process group described by the environment (torchrun, submitit) if any:
    NCCL on GPUs, gloo on the CPU. Without those variables: one process, no group."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_preference, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo", timeout=datetime.timedelta(minutes=30))
    info = DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device)
    log.debug("process %d of %d on %s", rank, world_size, device)
    return info


def teardown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum over ranks (a no-op in one process). `values` is reduced in place and returned."""
    if info.distributed:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def wrap_model(model: torch.nn.Module, info: DistInfo, *, fsdp: bool) -> torch.nn.Module:
    """DDP (or FSDP2 with one shard group per Transformer layer) when there are several ranks.
    Layerdrop skips the same layers on every rank (seeded by the step), but skipped layers
    get no gradient, so DDP must look for unused parameters then."""
    if fsdp:
        if not info.distributed:
            raise ValueError("run.fsdp needs several processes (torchrun or --slurm)")
        from torch.distributed.fsdp import fully_shard

        for layer in model.encoder.layers:
            fully_shard(layer)
        fully_shard(model)
        return model
    if not info.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(
        model, device_ids=device_ids, find_unused_parameters=model.cfg.layerdrop > 0
    )


def sync_gradients(model: torch.nn.Module, *, enabled: bool, fsdp: bool):
    """Reduce gradients across ranks only on the last micro-batch of a step."""
    if fsdp:
        model.set_requires_gradient_sync(enabled)
        return contextlib.nullcontext()
    if enabled or not hasattr(model, "no_sync"):
        return contextlib.nullcontext()
    return model.no_sync()


# ---------------------------------------------------------------- SLURM via submitit
class SlurmTrainJob:
    """A picklable, checkpointable callable: submitit runs it in every task of the job, and on
    timeout or preemption calls `checkpoint`, which requeues the same job; train() then resumes
    from the latest checkpoint in run.out_dir."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config  # plain dict: survives pickling across versions of our classes

    def __call__(self) -> dict[str, Any]:
        import submitit

        from hubertlab.train.loop import train

        env = submitit.JobEnvironment()
        if env.num_tasks > 1:
            submitit.helpers.TorchDistributedEnvironment().export(overwrite=True)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        return train(train_config_from_dict(self.config, where="submitted config"))

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        log.info("job interrupted: requeueing; training resumes from the latest checkpoint")
        return submitit.helpers.DelayedSubmission(SlurmTrainJob(self.config))


def submit(
    cfg: TrainConfig,
    *,
    nodes: int = 1,
    gpus_per_node: int = 1,
    time_minutes: int = 60 * 24,
    partition: str | None = None,
    account: str | None = None,
    cpus_per_task: int = 8,
    folder: str | Path | None = None,
    local: bool = False,
) -> Any:
    """Submit training as a SLURM job (one task per GPU) and return the submitit Job.

    `local` uses submitit's LocalExecutor instead (one node, for trying the path without SLURM);
    there, gpus_per_node = 0 runs one CPU task."""
    import submitit

    folder = Path(folder) if folder is not None else Path(cfg.run.out_dir) / "submitit"
    tasks_per_node = max(1, gpus_per_node)
    if local:
        if nodes != 1:
            raise ValueError("--nodes: the local executor runs on one node only")
        executor = submitit.LocalExecutor(folder=str(folder))
        executor.update_parameters(
            timeout_min=time_minutes, tasks_per_node=tasks_per_node, gpus_per_node=gpus_per_node
        )
    else:
        executor = submitit.AutoExecutor(folder=str(folder))
        if executor.cluster != "slurm":
            raise ValueError("--slurm: no SLURM found here (sbatch missing); try --local")
        params: dict[str, Any] = dict(
            nodes=nodes,
            tasks_per_node=tasks_per_node,
            gpus_per_node=gpus_per_node,
            cpus_per_task=cpus_per_task,
            timeout_min=time_minutes,
            name="hubertlab-train",
        )
        if partition:
            params["slurm_partition"] = partition
        if account:
            params["slurm_account"] = account
        executor.update_parameters(**params)
    job = executor.submit(SlurmTrainJob(to_dict(cfg)))
    log.info("submitted job %s (logs in %s)", job.job_id, folder)
    return job
