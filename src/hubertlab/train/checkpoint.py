"""Training checkpoints: written atomically by rank 0, the last K kept plus the best.

A checkpoint is one torch.save'd dict, loadable with weights_only=True:
  model (state dict), model_config (HubertConfig as a dict: what from_pretrained reads),
  optimizer, step, sampler (epoch, position), rng (per rank: torch, cuda, numpy, python),
  train_config, counters, best_valid_loss.
"""

from __future__ import annotations

import json
import logging
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from hubertlab.fileio import atomic_open, atomic_write_json
from hubertlab.models.safe_load import safe_load

log = logging.getLogger(__name__)

CHECKPOINT_RE = re.compile(r"^step_(\d+)\.pt$")
BEST_FILE = "best.json"


def checkpoint_path(ckpt_dir: str | Path, step: int) -> Path:
    return Path(ckpt_dir) / f"step_{step:08d}.pt"


def list_checkpoints(ckpt_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint in `ckpt_dir`, oldest first. Temp files of an
    interrupted write never match the name pattern."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = []
    for path in ckpt_dir.iterdir():
        m = CHECKPOINT_RE.match(path.name)
        if m:
            found.append((int(m.group(1)), path))
    return sorted(found)


def latest_checkpoint(ckpt_dir: str | Path) -> Path | None:
    found = list_checkpoints(ckpt_dir)
    return found[-1][1] if found else None


def best_checkpoint(ckpt_dir: str | Path) -> Path:
    """The checkpoint with the lowest validation loss (the latest when none is marked)."""
    ckpt_dir = Path(ckpt_dir)
    best = read_best(ckpt_dir)
    if best is not None and (ckpt_dir / best["path"]).is_file():
        return ckpt_dir / best["path"]
    latest = latest_checkpoint(ckpt_dir)
    if latest is None:
        raise FileNotFoundError(f"{ckpt_dir}: no checkpoint")
    return latest


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write `state` to a temp file and rename it over `path`: a killed run leaves either the
    old file or the new one, never half of one. A failed write (a full disk) raises OSError
    naming `path`."""
    with atomic_open(path, "wb") as f:
        try:
            torch.save(state, f)
        except RuntimeError as e:
            # torch's zip writer answers a failed write with its own RuntimeError ("unexpected
            # pos ...") chained to the OSError: raise the OSError, which atomic_open names.
            cause = e.__cause__ or e.__context__
            if not isinstance(cause, OSError):
                raise
            raise OSError(cause.errno, f"cannot write {path}: {cause.strerror or cause}") from None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A training checkpoint, read by the safe loader every command uses
    (models.safe_load.safe_load); CheckpointError (a ValueError) naming the file if it is
    truncated, holds a pickle that could run code, or is not one."""
    path = Path(path)
    state = safe_load(path)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a training checkpoint (a {type(state).__name__})")
    return state


def load_latest_intact(ckpt_dir: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """(path, state) of the newest checkpoint that loads; a damaged newer one (a write cut by a
    full disk, a copy gone wrong) is skipped with a warning. None when there is none at all."""
    found = list_checkpoints(ckpt_dir)
    for _, path in reversed(found):
        try:
            return path, load_checkpoint(path)
        except ValueError as e:
            log.warning("%s; falling back to the previous checkpoint", e)
    if found:
        raise ValueError(f"{ckpt_dir}: none of the {len(found)} checkpoints can be read")
    return None


def gather_per_rank(value: Any, info: Any) -> list[Any]:
    """`value` of every rank, in rank order (on every rank)."""
    if not info.distributed:
        return [value]
    gathered: list[Any] = [None] * info.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def barrier(info: Any) -> None:
    if info.distributed:
        dist.barrier()


def read_best(ckpt_dir: str | Path) -> dict[str, Any] | None:
    """{"step", "valid_loss", "path"} of the best checkpoint so far, or None."""
    path = Path(ckpt_dir) / BEST_FILE
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_best(ckpt_dir: str | Path, step: int, valid_loss: float) -> None:
    path = checkpoint_path(ckpt_dir, step)
    atomic_write_json(
        Path(ckpt_dir) / BEST_FILE, {"step": step, "valid_loss": valid_loss, "path": path.name}
    )


def prune_checkpoints(ckpt_dir: str | Path, keep_last: int, keep_every: int = 0) -> list[Path]:
    """Delete all but the newest `keep_last` checkpoints, the best one and (`keep_every` > 0)
    those whose step is a multiple of `keep_every`; returns the deleted."""
    found = list_checkpoints(ckpt_dir)
    best = read_best(ckpt_dir)
    keep = {p for _, p in found[-keep_last:]}
    if keep_every > 0:
        keep |= {p for step, p in found if step % keep_every == 0}
    if best is not None:
        keep.add(Path(ckpt_dir) / best["path"])
    deleted = [p for _, p in found if p not in keep]
    for path in deleted:
        path.unlink(missing_ok=True)
    return deleted


# ---------------------------------------------------------------- RNG states
def rng_state() -> dict[str, Any]:
    """This process's global RNG states, as tensors and plain values (weights_only-safe)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["name"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------- model and optimizer state
def model_and_optimizer_state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, *, fsdp: bool
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Full (unsharded, CPU) state dicts. With FSDP every rank must call this (collective)."""
    if not fsdp:
        model_state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        return model_state, optimizer.state_dict()
    # lazy: FSDP runs only; importing it costs a second
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return (
        get_model_state_dict(model, options=options),
        get_optimizer_state_dict(model, optimizer, options=options),
    )


def load_model_and_optimizer_state(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    model_state: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any] | None,
    *,
    fsdp: bool,
) -> None:
    """Inverse of model_and_optimizer_state (optimizer_state None: keep a fresh optimizer)."""
    if not fsdp:
        model.load_state_dict(model_state)
        if optimizer_state is not None:
            optimizer.load_state_dict(optimizer_state)
        return
    # lazy: FSDP runs only; importing it costs a second
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, model_state, options=options)
    if optimizer_state is not None:
        set_optimizer_state_dict(model, optimizer, optimizer_state, options=options)
