"""[run] loggers: the keys, the older `tensorboard = true`, W&B offline with no network (its
run folder holds the metrics; a resumed run continues the same W&B run) and the error when
wandb is asked for but not installed."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest

from hubertlab.config import ConfigError, RunSection, from_dict
from hubertlab.train.config import load_train_config
from hubertlab.train.loggers import WANDB_ID_FILE, open_loggers
from hubertlab.train.loop import train
from tests.train_fixtures import make_corpus, write_config


def run_section(**keys) -> RunSection:
    return from_dict(RunSection, {"out_dir": "run", **keys}, where="c.toml:run")


def test_loggers_keys_and_the_older_tensorboard_key():
    assert run_section().active_loggers == ()
    assert run_section(tensorboard=True).active_loggers == ("tensorboard",)
    both = run_section(loggers=["wandb"], tensorboard=True)
    assert both.active_loggers == ("tensorboard", "wandb")
    assert run_section(loggers=["tensorboard"], tensorboard=True).active_loggers == ("tensorboard",)
    with pytest.raises(ConfigError, match=r"c\.toml:run\.loggers\[0\]: 'mlflow' is not one of"):
        run_section(loggers=["mlflow"])
    with pytest.raises(ConfigError, match="loggers: each logger once"):
        run_section(loggers=["wandb", "wandb"])
    with pytest.raises(ConfigError, match="wandb_mode"):
        run_section(wandb_mode="cloud")


def test_wandb_asked_for_but_not_installed_names_the_key(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    run = RunSection(out_dir=tmp_path, loggers=("wandb",))
    with pytest.raises(ConfigError, match=r"\[run\] loggers lists 'wandb'.*hubertlab\[wandb\]"):
        open_loggers(run, resume_step=0, config={})


def wandb_history(run_dir: Path) -> dict[int, dict[str, float]]:
    """step -> metrics of every offline W&B run in OUT/wandb (their .wandb files: a LevelDB-style
    log of protobuf records; this wandb ships no reader for them)."""
    pb = pytest.importorskip("wandb.proto.wandb_internal_pb2")
    history: dict[int, dict[str, float]] = {}
    for path in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        data, pos, pending = path.read_bytes(), 7, b""  # 7: the file header (":W&B" + version)
        while pos + 7 <= len(data):
            left = 32768 - pos % 32768  # records never straddle a 32 KiB block's 7-byte tail
            _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
            if left < 7 or (kind == 0 and length == 0):
                pos += left
                continue
            pending += data[pos + 7 : pos + 7 + length]
            pos += 7 + length
            if kind in (1, 4):  # a whole record, or the last piece of one
                record = pb.Record()
                record.ParseFromString(pending)
                pending = b""
                if record.WhichOneof("record_type") == "history":
                    items = {
                        i.key or "/".join(i.nested_key): i.value_json for i in record.history.item
                    }
                    metrics = {k: float(v) for k, v in items.items() if not k.startswith("_")}
                    history.setdefault(record.history.step.num, {}).update(metrics)
    return history


def test_wandb_offline_logs_train_and_valid_and_a_resume_continues_its_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)  # offline comes from the config default
    monkeypatch.setenv("WANDB_API_KEY", "")  # no credentials: nothing could go online
    root = tmp_path / "data"
    train_set, valid_set = make_corpus(root, [1.0, 1.5, 0.8]), make_corpus(root, [1.0], name="v")
    run = {"loggers": ["wandb"], "wandb_project": "tests", "valid_every": 5, "ckpt_every": 5}

    def config(max_steps: int) -> Path:
        return write_config(tmp_path / f"c{max_steps}.toml", train_set, tmp_path / "run",
                            valid=valid_set, run=run, optim={"max_steps": max_steps})  # fmt: skip

    train(load_train_config(config(5)))
    run_id = (tmp_path / "run" / WANDB_ID_FILE).read_text().strip()
    train(load_train_config(config(10)))  # resumes from step 5
    assert (tmp_path / "run" / WANDB_ID_FILE).read_text().strip() == run_id
    folders = sorted((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(folders) == 2 and all(f.name.endswith(f"-{run_id}") for f in folders)
    history = wandb_history(tmp_path / "run")
    assert set(history) == {5, 10}  # log_every 5
    for step in (5, 10):
        assert {"train/loss", "train/lr", "valid/loss"} <= set(history[step])
    # The same numbers as metrics.jsonl.
    for record in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()):
        split, step = record["split"], record["step"]
        assert history[step][f"{split}/loss"] == pytest.approx(record["loss"])
