"""Launch paths: submitit (its local executor stands in for SLURM) and the train command."""

from __future__ import annotations

import pickle

import pytest

from hubertlab.cli import main
from hubertlab.config import to_dict
from hubertlab.train import checkpoint as ckpt
from hubertlab.train.config import load_train_config
from hubertlab.train.launch import SlurmTrainJob, pick_device, submit
from tests.train_fixtures import make_corpus, write_config


def test_submitit_local_executor_trains_and_resumes(tmp_path):
    pytest.importorskip("submitit")
    train_set = make_corpus(tmp_path / "data", [1.0, 1.5, 0.8, 1.2])
    path = write_config(
        tmp_path / "c.toml",
        train_set,
        tmp_path / "run",
        optim={"max_steps": 6, "warmup_steps": 2},
        run={"ckpt_every": 3},
    )
    cfg = load_train_config(path)
    job = submit(cfg, gpus_per_node=0, time_minutes=10, local=True)
    result = job.result()
    assert result["step"] == 6
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "run" / "checkpoints")] == [3, 6]


def test_the_job_requeues_itself_on_timeout(tmp_path):
    submitit = pytest.importorskip("submitit")
    cfg = load_train_config(write_config(tmp_path / "c.toml", ("t.csv", "u.jsonl"), tmp_path))
    job = SlurmTrainJob(to_dict(cfg))
    job = pickle.loads(pickle.dumps(job))  # what submitit does with it
    delayed = job.checkpoint()
    assert isinstance(delayed, submitit.helpers.DelayedSubmission)
    assert isinstance(delayed.function, SlurmTrainJob) and delayed.function.config == job.config


def test_slurm_without_a_cluster_fails_clearly(tmp_path, capsys, monkeypatch):
    pytest.importorskip("submitit")
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch anywhere
    path = write_config(tmp_path / "c.toml", ("t.csv", "u.jsonl"), tmp_path / "run")
    assert (
        main(
            [
                "train",
                str(path),
                "--slurm",
                "--nodes",
                "2",
                "--gpus-per-node",
                "8",
                "--partition",
                "gpu",
                "--account",
                "me",
                "--time",
                "60",
            ]
        )
        == 1
    )
    assert "SLURM" in capsys.readouterr().err


def test_device_choice():
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type in ("cpu", "cuda")
