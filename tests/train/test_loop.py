"""The training loop: bit-identical resume after SIGKILL, DDP == one process, skips, checkpoints."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hubertlab.cli import main
from hubertlab.train import checkpoint as ckpt
from hubertlab.train.config import load_train_config
from hubertlab.train.loop import train
from tests.train_fixtures import make_corpus, write_config

SECONDS = [1.0, 1.5, 0.8, 2.0, 1.2, 0.6, 1.7, 0.9]
NO_DROPOUT = {"dropout": 0.0, "attention_dropout": 0.0, "input_dropout": 0.0}
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    return make_corpus(root, SECONDS), make_corpus(root, [1.0, 1.4], name="valid", seed=1)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "hubertlab.cli", *args]


def train_losses(run_dir: Path) -> list[float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["split"] == "train"]


def run_full_and_killed(full: Path, killed: Path) -> tuple[dict, dict]:
    """Train `full` to the end; train `killed`, SIGKILL it once its step-10 checkpoint exists,
    resume it to the end; return both runs' step-20 checkpoints."""
    subprocess.run(cli("train", str(full)), check=True, capture_output=True, cwd=REPO)
    proc = subprocess.Popen(
        cli("train", str(killed)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO
    )
    ckpt_dir = load_train_config(killed).run.out_dir / "checkpoints"
    first = ckpt.checkpoint_path(ckpt_dir, 10)
    while not first.exists() and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # If the run got further before the signal landed, forget that: restart from step 10.
    for _, path in ckpt.list_checkpoints(ckpt_dir):
        if path != first:
            path.unlink()
    subprocess.run(cli("train", str(killed)), check=True, capture_output=True, cwd=REPO)
    full_dir = load_train_config(full).run.out_dir / "checkpoints"
    return (
        ckpt.load_checkpoint(ckpt.checkpoint_path(full_dir, 20)),
        ckpt.load_checkpoint(ckpt.checkpoint_path(ckpt_dir, 20)),
    )


def test_resume_after_sigkill_is_bit_identical(corpus, tmp_path):
    train_set, _ = corpus
    # One decoding worker, dropout on: the resume must restore sampler, RNG and optimizer.
    sections = {"data": {"num_workers": 1}, "run": {"log_every": 1}}
    full = write_config(tmp_path / "full.toml", train_set, tmp_path / "full", **sections)
    killed = write_config(tmp_path / "killed.toml", train_set, tmp_path / "killed", **sections)
    a, b = run_full_and_killed(full, killed)
    assert a["model"].keys() == b["model"].keys()
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name
    assert a["sampler"] == b["sampler"]
    assert train_losses(tmp_path / "full") == train_losses(tmp_path / "killed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(config: Path, command: str = "train") -> list[str]:
    """`hubertlab COMMAND CONFIG` on 2 CPU processes (gloo)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    return [*launcher, "--master_port", str(free_port()), *cli(command, str(config))[1:]]


def run_all(commands: list[list[str]]) -> None:
    """Run the commands side by side from the repository root; each must succeed."""
    procs = [
        subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
        for c in commands
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-3000:]


def test_two_processes_match_one_with_the_same_global_batch(corpus, tmp_path):
    """DDP (gloo) and FSDP2 on 2 CPU processes vs one process with grad_accum = 2."""
    train_set, _ = corpus
    common = {"model__overrides": NO_DROPOUT}
    configs = {
        name: write_config(
            tmp_path / f"{name}.toml",
            train_set,
            tmp_path / name,
            optim={"grad_accum": accum, "max_steps": 8},
            run={"log_every": 1, "fsdp": name == "fsdp"},
            **common,
        )
        for name, accum in (("one", 2), ("ddp", 1), ("fsdp", 1))
    }
    commands = [
        cli("train", str(configs["one"])),
        torchrun(configs["ddp"]),
        torchrun(configs["fsdp"]),
    ]
    run_all(commands)
    reference = train_losses(tmp_path / "one")
    assert len(reference) == 8
    weights = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "one" / "checkpoints"))
    for name in ("ddp", "fsdp"):
        assert train_losses(tmp_path / name) == pytest.approx(reference, abs=1e-5), name
        other = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / name / "checkpoints"))
        for key, value in weights["model"].items():
            torch.testing.assert_close(value, other["model"][key], atol=1e-5, rtol=1e-4)


def test_training_skips_corrupt_audio_validates_and_keeps_checkpoints(corpus, tmp_path):
    root = tmp_path / "data"
    train_set = make_corpus(root, SECONDS, corrupt=(1, 4))
    _, valid_set = corpus
    path = write_config(
        tmp_path / "c.toml",
        train_set,
        tmp_path / "run",
        valid=valid_set,
        run={"ckpt_every": 5, "keep_last": 1, "valid_every": 5, "tensorboard": True},
        optim={"max_steps": 15, "lr": 5e-3},
    )
    result = train(load_train_config(path))
    assert result["step"] == 15 and result["corrupt_skipped"] > 0
    losses = train_losses(tmp_path / "run")
    assert losses[-1] < losses[0]
    found = [s for s, _ in ckpt.list_checkpoints(tmp_path / "run" / "checkpoints")]
    best = ckpt.read_best(tmp_path / "run" / "checkpoints")
    assert set(found) == {15, best["step"]}  # the last one plus the best
    state = torch.load(
        ckpt.checkpoint_path(tmp_path / "run" / "checkpoints", 15), weights_only=True
    )
    assert {"model", "model_config", "optimizer", "step", "sampler", "rng", "train_config"} <= set(
        state
    )
    assert (tmp_path / "run" / "loss.png").stat().st_size > 0
    assert any((tmp_path / "run" / "tensorboard").iterdir())

    # A finished run started again does nothing but report.
    assert train(load_train_config(path))["step"] == 15

    # `hubertlab validate` over the checkpoints folder marks the best.
    out = tmp_path / "valid.jsonl"
    assert main(["validate", str(tmp_path / "run"), "--config", str(path), "--out", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["step"] for r in records] == sorted(found)
    assert sum(r["best"] for r in records) == 1
    assert all(0 <= r["masked_acc"] <= 1 for r in records)


def test_continued_pretraining_gets_a_new_head(corpus, tmp_path):
    from hubertlab.models.checkpoint import from_pretrained

    train_set, _ = corpus
    first = write_config(
        tmp_path / "a.toml", train_set, tmp_path / "a", optim={"max_steps": 3, "warmup_steps": 1}
    )
    train(load_train_config(first))
    source = ckpt.latest_checkpoint(tmp_path / "a" / "checkpoints")
    # Same audio, coarser units: 4 per set instead of 8.
    rows = [json.loads(line) for line in train_set[1].read_text().splitlines()]
    units4 = tmp_path / "units4.jsonl"
    units4.write_text(
        "".join(
            json.dumps({"fileid": r["fileid"], "units": [u % 4 for u in r["units"]]}) + "\n"
            for r in rows
        )
    )
    second = write_config(
        tmp_path / "b.toml",
        (train_set[0], units4),
        tmp_path / "b",
        model={"from_pretrained": str(source)},
        data={"num_units": [4]},
        optim={"max_steps": 2, "warmup_steps": 1},
    )
    train(load_train_config(second))
    model = from_pretrained(ckpt.latest_checkpoint(tmp_path / "b" / "checkpoints"))
    assert model.cfg.num_units == (4,)
    assert model.unit_embeddings[0].shape[0] == 4
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "b" / "checkpoints"))
    assert state["optimizer"]["state"][0]["step"] == 2  # fresh optimizer: two updates


def test_non_finite_steps_are_skipped_then_stop_the_run(corpus, tmp_path):
    train_set, _ = corpus
    path = write_config(
        tmp_path / "c.toml",
        train_set,
        tmp_path / "run",
        optim={"lr": 1e30, "warmup_steps": 0, "max_steps": 50},
        run={"max_nonfinite_in_a_row": 3},
    )
    with pytest.raises(FloatingPointError, match="3 steps in a row"):
        train(load_train_config(path))


def test_batches_whose_files_all_fail_are_skipped(tmp_path):
    train_set = make_corpus(tmp_path / "data", [1.0, 1.0, 1.0, 1.0], corrupt=(0, 1, 2))
    path = write_config(
        tmp_path / "c.toml", train_set, tmp_path / "run", optim={"max_steps": 4, "warmup_steps": 1}
    )
    result = train(load_train_config(path))
    assert result["step"] == 4 and result["corrupt_skipped"] >= 3
    assert result["nonfinite_skipped"] == 0


def test_new_head_drops_the_old_unit_embeddings(corpus, tmp_path):
    """The next iteration keeps the backbone but not the head: its units are new clusters,
    even when their number is the same."""
    from hubertlab.tasks import build_task

    train_set, _ = corpus
    first = write_config(
        tmp_path / "a.toml", train_set, tmp_path / "a", optim={"max_steps": 2, "warmup_steps": 1}
    )
    train(load_train_config(first))
    source = ckpt.latest_checkpoint(tmp_path / "a" / "checkpoints")
    old = ckpt.load_checkpoint(source)["model"]
    for new_head in (False, True):
        path = write_config(
            tmp_path / f"b{new_head}.toml",
            train_set,
            tmp_path / "b",
            model={"from_pretrained": str(source), "new_head": new_head},
        )
        state = build_task(load_train_config(path)).build_model().state_dict()
        assert torch.equal(state["mask_embedding"], old["mask_embedding"])
        head_equal = torch.equal(state["unit_embeddings.0"], old["unit_embeddings.0"])
        assert head_equal == (not new_head)


def test_a_damaged_checkpoint_falls_back_and_stale_temp_files_go(corpus, tmp_path, caplog):
    """A truncated latest checkpoint (a full disk, a copy gone wrong): training resumes from the
    previous intact one with a warning, `validate` reports the broken one and scores the rest;
    temp files of killed checkpoint writes are removed at start."""
    train_set, valid_set = corpus
    path = write_config(
        tmp_path / "c.toml",
        train_set,
        tmp_path / "run",
        valid=valid_set,
        run={"ckpt_every": 5, "keep_last": 5, "valid_every": 0},
        optim={"max_steps": 10},
    )
    cfg = load_train_config(path)
    train(cfg)
    ckpt_dir = tmp_path / "run" / "checkpoints"
    last = ckpt.checkpoint_path(ckpt_dir, 10)
    last.write_bytes(last.read_bytes()[:1000])
    stale = ckpt_dir / ".step_00000010.pt.abcd1234.tmp"
    stale.write_bytes(b"half a checkpoint")
    out = tmp_path / "valid.jsonl"
    assert main(["validate", str(ckpt_dir), "--config", str(path), "--out", str(out)]) == 0
    records = {r["step"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert "error" in records[10] and str(last) in records[10]["error"]
    assert records[5]["best"] and "loss" in records[5]
    with caplog.at_level("WARNING"):
        result = train(cfg)
    assert "falling back to the previous checkpoint" in caplog.text and str(last) in caplog.text
    assert result["step"] == 10 and not stale.exists()
    assert ckpt.load_checkpoint(last)["step"] == 10  # rewritten whole from step 5
