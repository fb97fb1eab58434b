"""Launch paths: submitit (its local executor stands in for SLURM) and the train command."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from hubertlab.cli import main
from hubertlab.config import to_dict
from hubertlab.slurm import SlurmConfig, TrainJob, submit_training
from hubertlab.train import checkpoint as ckpt
from hubertlab.train.config import load_train_config
from hubertlab.train.distributed import pick_device
from tests.train_fixtures import make_corpus, write_config

REPO = Path(__file__).resolve().parents[1]


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
    job = submit_training(cfg, SlurmConfig(gpus_per_node=0, time_min=10), local=True)
    result = job.result()
    assert result["step"] == 6
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "run" / "checkpoints")] == [3, 6]


def test_the_job_requeues_itself_on_timeout(tmp_path):
    submitit = pytest.importorskip("submitit")
    cfg = load_train_config(write_config(tmp_path / "c.toml", ("t.csv", "u.jsonl"), tmp_path))
    job = TrainJob(to_dict(cfg))
    job = pickle.loads(pickle.dumps(job))  # what submitit does with it
    delayed = job.checkpoint()
    assert isinstance(delayed, submitit.helpers.DelayedSubmission)
    assert isinstance(delayed.function, TrainJob) and delayed.function.config == job.config


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


class FakeExecutor:
    """Stands in for submitit.AutoExecutor on a SLURM cluster: records what it is given."""

    cluster = "slurm"
    created: list[FakeExecutor] = []

    def __init__(self, folder: str) -> None:
        self.folder, self.params, self.submitted = folder, {}, []
        FakeExecutor.created.append(self)

    def update_parameters(self, **params) -> None:
        self.params.update(params)

    def submit(self, fn):
        self.submitted.append(fn)

        class Job:
            job_id = "42"

            def result(self):
                return {"step": 1}

        return Job()


def test_every_slurm_setting_reaches_the_pipelines_training_job(tmp_path, monkeypatch):
    """configs/pipeline-example.toml's mem_gb (and qos, constraint, extra) must reach the
    training job, not only the shard jobs."""
    submitit = pytest.importorskip("submitit")
    from hubertlab.pipeline.config import load_pipeline_config
    from hubertlab.pipeline.steps import build_steps

    text = (REPO / "configs" / "pipeline-example.toml").read_text()
    text = text.replace("mem_gb = 64", 'mem_gb = 123\nqos = "high"\nconstraint = "h100"')
    text = text.replace(
        "[executor.slurm]", '[executor.slurm.extra]\nexclusive = "user"\n[executor.slurm]'
    )
    config = tmp_path / "configs" / "p.toml"
    config.parent.mkdir()
    config.write_text(text)
    cfg = load_pipeline_config(config)
    FakeExecutor.created.clear()
    monkeypatch.setattr(submitit, "AutoExecutor", FakeExecutor)
    train_step = next(s for s in build_steps(cfg) if s.name == "iteration1/train")
    train_step.run()
    (executor,) = FakeExecutor.created
    assert isinstance(executor.submitted[0], TrainJob)
    params = executor.params
    assert params["mem_gb"] == 123 and params["nodes"] == 4 and params["gpus_per_node"] == 8
    assert params["tasks_per_node"] == 8 and params["timeout_min"] == 1440
    assert params["slurm_partition"] == "gpu" and params["slurm_account"] == "my-account"
    assert params["slurm_qos"] == "high" and params["slurm_constraint"] == "h100"
    assert params["slurm_exclusive"] == "user"


def test_train_slurm_options_reach_the_job(tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    path = write_config(tmp_path / "c.toml", ("t.csv", "u.jsonl"), tmp_path / "run")
    FakeExecutor.created.clear()
    monkeypatch.setattr(submitit, "AutoExecutor", FakeExecutor)
    args = ["train", str(path), "--slurm", "--nodes", "2", "--gpus-per-node", "4",
            "--mem-gb", "200", "--qos", "low", "--constraint", "a100", "--time", "30"]  # fmt: skip
    assert main(args) == 0
    params = FakeExecutor.created[0].params
    assert (params["nodes"], params["tasks_per_node"], params["mem_gb"]) == (2, 4, 200)
    assert params["slurm_qos"] == "low" and params["slurm_constraint"] == "a100"
    assert params["timeout_min"] == 30
