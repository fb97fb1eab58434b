"""Distributed helpers: the process group, sums across ranks, DDP / FSDP2 wrapping.

torchrun and submitit (hubertlab.slurm) both describe the job through the standard
torch.distributed variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT); train()
reads them through setup_distributed() and nothing else does."""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

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


def wrap_model(
    model: torch.nn.Module,
    info: DistInfo,
    *,
    fsdp: bool,
    shard_units: list[torch.nn.Module] = (),
    find_unused_parameters: bool = False,
) -> torch.nn.Module:
    """DDP (or FSDP2 with one shard group per module of `shard_units`, the Transformer
    layers) when there are several ranks. Layers skipped by layerdrop (the same on every rank)
    and frozen parameters get no gradient: DDP must then look for unused parameters."""
    if fsdp:
        if not info.distributed:
            raise ValueError("run.fsdp needs several processes (torchrun or --slurm)")
        # lazy: FSDP runs only; importing it costs a second
        from torch.distributed.fsdp import fully_shard

        for unit in shard_units:
            fully_shard(unit)
        fully_shard(model)
        return model
    if not info.distributed:
        return model
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(
        model, device_ids=device_ids, find_unused_parameters=find_unused_parameters
    )


def sync_gradients(model: torch.nn.Module, *, enabled: bool, fsdp: bool):
    """Reduce gradients across ranks only on the last micro-batch of a step."""
    if fsdp:
        model.set_requires_gradient_sync(enabled)
        return contextlib.nullcontext()
    if enabled or not hasattr(model, "no_sync"):
        return contextlib.nullcontext()
    return model.no_sync()
