"""Shards run as local processes or as submitit jobs (submitit's local fallback here)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hubertlab.pipeline.executor import ExecutorConfig, run_shards
from hubertlab.slurm import SlurmConfig


def write_shard(shard: int, num_shards: int, out: str) -> None:
    Path(out, f"{shard}-of-{num_shards}").write_text(str(os.getpid()))


def fail_on_shard_one(shard: int, num_shards: int, out: str) -> None:
    if shard == 1:
        raise ValueError("shard 1 broke")


@pytest.mark.parametrize("workers", [1, 2])
def test_local_shards(tmp_path, workers):
    cfg = ExecutorConfig(kind="local", workers=workers, num_shards=3)
    run_shards(cfg, write_shard, (str(tmp_path),), tmp_path / "logs", "t")
    assert sorted(p.name for p in tmp_path.glob("*-of-3")) == ["0-of-3", "1-of-3", "2-of-3"]
    # One worker runs the shards in this process; several run them in worker processes (how
    # many of those get a shard depends on how fast each one starts: not asserted).
    pids = {p.read_text() for p in tmp_path.glob("*-of-3")}
    assert (pids == {str(os.getpid())}) == (workers == 1)


def test_local_shard_error_propagates(tmp_path):
    cfg = ExecutorConfig(kind="local", workers=1, num_shards=2)
    with pytest.raises(ValueError, match="shard 1 broke"):
        run_shards(cfg, fail_on_shard_one, (str(tmp_path),), tmp_path / "logs", "t")


def test_slurm_shards_through_submitit(tmp_path):
    pytest.importorskip("submitit")
    cfg = ExecutorConfig(kind="slurm", num_shards=2, slurm=SlurmConfig(gpus_per_node=0))
    run_shards(cfg, write_shard, (str(tmp_path),), tmp_path / "logs", "t")
    assert sorted(p.name for p in tmp_path.glob("*-of-2")) == ["0-of-2", "1-of-2"]


def test_bad_slurm_settings_are_named():
    with pytest.raises(ValueError, match="time_min"):
        SlurmConfig(time_min=0)
