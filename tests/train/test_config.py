"""Training config: checked on load (before any work), and the learning-rate schedules."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from hubertlab.cli import main
from hubertlab.config import ConfigError, OptimSection
from hubertlab.train.config import load_train_config
from hubertlab.train.optim import lr_at
from tests.train_fixtures import write_config

FAKE = ("train.csv", "units.jsonl")  # never opened: loading the config must not touch data


def config(tmp_path, **sections):
    return write_config(tmp_path / "c.toml", FAKE, tmp_path / "run", **sections)


def test_a_good_config_loads(tmp_path):
    cfg = load_train_config(config(tmp_path))
    assert cfg.model.preset == "tiny" and cfg.data.num_units == (8,)
    assert cfg.optim.betas == (0.9, 0.98) and cfg.optim.eps == 1e-6
    assert cfg.data.max_samples == 16000 and cfg.data.batch_samples == 32000


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"run": {"learning_rate": 1.0}}, r"\.run: unknown key 'learning_rate'"),
        ({"optim": {"schedule": "exponential"}}, r"optim\.schedule: 'exponential' is not one"),
        ({"optim": {"lr": "fast"}}, r"optim\.lr: expected a number"),
        ({"optim": {"grad_accum": 0}}, r"optim: grad_accum and max_steps must be >= 1"),
        ({"run": {"precision": "fp16"}}, r"run\.precision: 'fp16'"),
        ({"data": {"num_units": [8, 8]}}, r"data: num_units: 2 entries for 1 unit files"),
        ({"data": {"min_crop_seconds": 3.0}}, r"data: min_crop_seconds"),
        ({"model__overrides": {"hiden_dim": 3}}, r"model\.overrides: unknown key 'hiden_dim'"),
        ({"model__overrides": {"num_heads": 5}}, r"model\.overrides.*divisible by num_heads"),
        ({"model": {"preset": "huge"}}, r"model\.preset: 'huge' is not one"),
        ({"optim": {"schedule": "tri_stage"}}, r"final_lr_scale: must be > 0"),
    ],
)
def test_bad_keys_and_values_are_named(tmp_path, sections, message):
    with pytest.raises(ConfigError, match=message):
        load_train_config(config(tmp_path, **sections))


def test_cli_fails_before_any_work(tmp_path, capsys):
    path = config(tmp_path, run={"log_evry": 3})
    assert main(["train", str(path)]) == 1
    err = capsys.readouterr().err
    assert "log_evry" in err and str(path) in err
    assert not (tmp_path / "run").exists()


def test_warmup_then_linear_decay_to_zero():
    cfg = OptimSection(lr=1.0, warmup_steps=10, max_steps=110)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0)
    assert lr_at(60, cfg) == pytest.approx(0.5)
    assert lr_at(110, cfg) == pytest.approx(0.0)


def test_warmup_fraction_cosine_constant_and_tri_stage():
    cos = OptimSection(
        lr=2.0, warmup_fraction=0.1, max_steps=100, schedule="cosine", final_lr_scale=0.1
    )
    assert cos.num_warmup_steps == 10
    assert lr_at(55, cos) == pytest.approx(2.0 * (0.1 + 0.9 * 0.5))
    assert lr_at(100, cos) == pytest.approx(0.2)
    const = OptimSection(lr=1.0, warmup_steps=5, max_steps=100, schedule="constant")
    assert lr_at(2, const) == pytest.approx(0.6) and lr_at(99, const) == 1.0
    tri = OptimSection(
        lr=1.0,
        warmup_steps=10,
        max_steps=100,
        schedule="tri_stage",
        hold_fraction=0.4,
        final_lr_scale=0.01,
    )
    assert lr_at(49, tri) == 1.0
    assert lr_at(75, tri) == pytest.approx(0.01**0.5)
    assert lr_at(100, tri) == pytest.approx(0.01)
    steps = [lr_at(s, tri) for s in range(100)]
    assert all(math.isfinite(v) and v > 0 for v in steps)


def test_example_config_loads():
    cfg = load_train_config(Path(__file__).resolve().parents[2] / "configs" / "tiny-demo.toml")
    assert cfg.model.preset == "tiny"
