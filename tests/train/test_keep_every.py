"""run.keep_every: checkpoints at multiples of N steps survive pruning (the points of an ABX
learning curve), besides the last keep_last and the best."""

from __future__ import annotations

import pytest

from hubertlab.config import ConfigError
from hubertlab.train import checkpoint as ckpt
from hubertlab.train.config import load_train_config
from hubertlab.train.loop import train
from tests.train_fixtures import make_corpus, write_config


def test_prune_keeps_multiples_of_keep_every(tmp_path):
    for step in (5, 10, 15, 20, 25, 30):
        ckpt.checkpoint_path(tmp_path, step).write_bytes(b"x")
    ckpt.write_best(tmp_path, 5, 1.0)
    deleted = ckpt.prune_checkpoints(tmp_path, keep_last=1, keep_every=10)
    assert sorted(p.name for p in deleted) == ["step_00000015.pt", "step_00000025.pt"]
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [5, 10, 20, 30]
    # 0 (the default) is off: the last and the best only.
    assert len(ckpt.prune_checkpoints(tmp_path, keep_last=1)) == 2


def test_training_keeps_checkpoints_at_the_cadence(tmp_path):
    train_set = make_corpus(tmp_path / "data", [1.0, 1.5, 0.8, 2.0])
    path = write_config(
        tmp_path / "c.toml",
        train_set,
        tmp_path / "run",
        run={"ckpt_every": 5, "keep_last": 1, "keep_every": 10},
        optim={"max_steps": 25},
    )
    assert train(load_train_config(path))["step"] == 25
    found = [s for s, _ in ckpt.list_checkpoints(tmp_path / "run" / "checkpoints")]
    assert found == [0, 10, 20, 25]  # step 0: the curve's origin (the model before training)


def test_negative_keep_every_is_refused(tmp_path):
    path = write_config(tmp_path / "c.toml", ("t.csv", "u.jsonl"), tmp_path / "run",
                        run={"keep_every": -1})  # fmt: skip
    with pytest.raises(ConfigError, match=r"run: keep_every: must be >= 0, got -1"):
        load_train_config(path)


def test_resuming_from_the_step_0_checkpoint_repeats_the_run(tmp_path):
    train_set = make_corpus(tmp_path / "data", [1.0, 1.5, 0.8, 2.0])
    runs = {}
    for name in ("a", "b"):
        path = write_config(
            tmp_path / f"{name}.toml",
            train_set,
            tmp_path / name,
            run={"ckpt_every": 4, "keep_every": 4},
            optim={"max_steps": 8},
        )
        train(load_train_config(path))
        runs[name] = path
    ckpt_dir = tmp_path / "b" / "checkpoints"
    for step, path in ckpt.list_checkpoints(ckpt_dir):
        if step:
            path.unlink()  # as if killed right after the step-0 checkpoint
    assert train(load_train_config(runs["b"]))["step"] == 8
    a, b = (ckpt.load_checkpoint(ckpt.checkpoint_path(tmp_path / n / "checkpoints", 8))
            for n in ("a", "b"))  # fmt: skip
    assert a["model"].keys() == b["model"].keys()
    assert all(a["model"][k].equal(b["model"][k]) for k in a["model"])
