"""SpidR/DinoSR through the training loop: metrics, bit-identical resume after SIGKILL (teacher,
codebooks and schedule included), two gloo processes equal one with the same global batch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hubertlab.train import checkpoint as ckpt
from hubertlab.train.config import load_train_config
from hubertlab.train.loop import train
from hubertlab.train.validate import model_from_checkpoint, validate_checkpoints
from tests.train.test_loop import cli, run_all, run_full_and_killed, torchrun, train_losses
from tests.train_fixtures import CROPS, make_corpus, optim_and_run, write_tables

REPO = Path(__file__).resolve().parents[2]
SECONDS = [1.0, 1.5, 0.8, 2.0, 1.2, 0.6, 1.7, 0.9]
# Small enough for 20 CPU steps in a few seconds.
TINY = {
    "conv_channels": [16] * 7,
    "hidden_dim": 32,
    "num_layers": 2,
    "num_heads": 2,
    "ffn_dim": 64,
    "pos_conv_kernel": 5,
    "pos_conv_groups": 4,
    "pos_conv_layers": 2,
    "num_codebooks": 2,
    "codebook_size": 16,
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("spidr_train")
    return make_corpus(root, SECONDS)[0], make_corpus(root, [1.0, 1.4], name="valid", seed=1)[0]


def write_config(path: Path, manifest: Path, out_dir: Path, kind: str = "spidr", **sections):
    tables = {
        "model": {"kind": kind, "preset": "tiny"},
        "model.overrides": dict(TINY),
        "data": {"train_manifest": str(manifest), **CROPS},
        **optim_and_run(out_dir),
    }
    return write_tables(path, tables, **sections)


@pytest.mark.parametrize("kind", ["spidr", "dinosr"])
def test_training_logs_perplexities_and_moves_teacher_and_codebooks(corpus, tmp_path, kind):
    train_set, valid_set = corpus
    config = write_config(
        tmp_path / "c.toml",
        train_set,
        tmp_path / "run",
        kind,
        data={"valid_manifest": str(valid_set)},
        run={"valid_every": 10},
    )
    cfg = load_train_config(config)
    summary = train(cfg)
    assert summary["step"] == 20
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for record in records:
        assert 1.0 <= record["target_ppl"] <= 16.0 and 1.0 <= record["pred_ppl"] <= 16.0
        assert 0.0 <= record["masked_acc"] <= 1.0
    assert {r["split"] for r in records} == {"train", "valid"}
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "run" / "checkpoints"))
    assert state["model_kind"] == kind
    assert int(state["model"]["current_step"]) == 20
    fresh = model_from_checkpoint(ckpt.latest_checkpoint(tmp_path / "run" / "checkpoints"))
    assert fresh.cfg.kind == kind
    counts = state["model"]["codebooks.0.counts"]
    assert not torch.equal(counts, torch.ones_like(counts))  # the codebooks moved
    records = validate_checkpoints(tmp_path / "run", cfg)
    assert [r["step"] for r in records] == [10, 20] and all("target_ppl" in r for r in records)


def test_data_for_spidr_is_standardised_and_needs_no_units(corpus, tmp_path):
    from hubertlab.tasks import build_task

    cfg = load_train_config(write_config(tmp_path / "c.toml", corpus[0], tmp_path / "run"))
    batch = next(iter(build_task(cfg).train_batches(rank=0, world_size=1, pin_memory=False)))
    assert batch.labels == [] and batch.mask is not None
    # Whole files are standardised before the crop: each crop is close to, not exactly, 0/1.
    assert batch.waveforms.std(1).sub(1).abs().max() < 0.3
    bad = write_config(tmp_path / "bad.toml", corpus[0], tmp_path / "bad")
    text = bad.read_text().replace("[data]", '[data]\ntrain_units = ["u.jsonl"]\nnum_units = [8]')
    bad.write_text(text)
    with pytest.raises(ValueError, match="train_units"):
        load_train_config(bad)


def test_resume_after_sigkill_is_bit_identical(corpus, tmp_path):
    sections = {"run": {"log_every": 1}, "model__overrides": {**TINY, "dropout": 0.1}}
    full = write_config(tmp_path / "full.toml", corpus[0], tmp_path / "full", **sections)
    killed = write_config(tmp_path / "killed.toml", corpus[0], tmp_path / "killed", **sections)
    a, b = run_full_and_killed(full, killed)
    assert any(k.startswith("teacher.") for k in a["model"])
    assert a["model"].keys() == b["model"].keys()
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name
    assert train_losses(tmp_path / "full") == train_losses(tmp_path / "killed")


def test_two_processes_match_one_with_the_same_global_batch(corpus, tmp_path):
    """DDP (gloo): codebook statistics all-reduced, so 2 x 1 micro-batch == 1 x 2."""
    no_dropout = {**TINY, "dropout": 0.0, "attention_dropout": 0.0}
    configs = {
        name: write_config(
            tmp_path / f"{name}.toml",
            corpus[0],
            tmp_path / name,
            optim={"grad_accum": accum, "max_steps": 8},
            run={"log_every": 1},
            model__overrides=no_dropout,
        )
        for name, accum in (("one", 2), ("ddp", 1))
    }
    run_all([cli("train", str(configs["one"])), torchrun(configs["ddp"])])
    records = {
        name: [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        for name in configs
    }
    assert len(records["one"]) == 8
    for a, b in zip(records["one"], records["ddp"], strict=True):
        for key in ("loss", "target_ppl", "pred_ppl"):
            assert b[key] == pytest.approx(a[key], abs=1e-5), key
    one = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "one" / "checkpoints"))
    ddp = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "ddp" / "checkpoints"))
    for key, value in one["model"].items():
        torch.testing.assert_close(value, ddp["model"][key], atol=1e-5, rtol=1e-4, msg=key)


def test_a_collapsing_codebook_is_warned_about(corpus, tmp_path, caplog):
    from hubertlab.tasks import build_task

    path = write_config(
        tmp_path / "c.toml", corpus[0], tmp_path / "run", model={"collapse_perplexity": 2.0}
    )
    task = build_task(load_train_config(path))
    totals = {name: 0.0 for name in task.metric_names}
    totals.update(loss_sum=50.0, num_masked=100.0, correct=10.0)
    for c in range(2):
        totals[f"target.{c}.3"] = 100.0  # every frame on one codeword
        for k in range(16):
            totals[f"pred.{c}.{k}"] = 100.0 / 16
    with caplog.at_level("WARNING"):
        summary = task.summarize(totals)
    assert summary["target_ppl"] == pytest.approx(1.0, abs=1e-4)
    assert summary["pred_ppl"] == pytest.approx(16.0, abs=1e-3)
    assert "collapsing" in caplog.text
    caplog.clear()
    for c in range(2):
        for k in range(16):
            totals[f"target.{c}.{k}"] = 100.0 / 16
    assert task.summarize(totals)["target_ppl"] == pytest.approx(16.0, abs=1e-3)
    assert "collapsing" not in caplog.text
    # One codebook collapsed beside a healthy one: the mean (8.5) hides it, the warning not.
    for k in range(16):
        totals[f"target.1.{k}"] = 100.0 if k == 5 else 0.0
    assert task.summarize(totals)["target_ppl"] == pytest.approx(8.5, abs=1e-3)
    assert "collapsing (layer 2: 1.0)" in caplog.text


def test_the_example_config_loads():
    cfg = load_train_config(REPO / "configs" / "spidr-tiny-demo.toml")
    assert cfg.model.kind == "spidr" and cfg.model.preset == "tiny"
    assert not cfg.data.train_units


def test_cnn_and_projection_freeze_together_and_the_teacher_never_trains(corpus, tmp_path):
    from hubertlab.tasks import build_task

    path = write_config(
        tmp_path / "c.toml", corpus[0], tmp_path / "run", model={"freeze_cnn_from_step": 5}
    )
    task = build_task(load_train_config(path))
    model = task.build_model()
    last_norm = "backbone.encoder.layers.1.ffn_norm.weight"  # SpidR: no loss term reads it
    for name, _ in model.named_parameters():
        frozen_later = name.startswith(("backbone.cnn.", "backbone.feature_"))
        never = name.startswith("teacher.") or name == last_norm or name == last_norm[:-6] + "bias"
        assert task.trainable(name, 0) is not never, name
        assert task.trainable(name, 5) is not (never or frozen_later), name
