"""The teacher's EMA schedule stretched to the run (ema_schedule_steps): the same lag and the same
freezing point as fractions of the run; unset keeps the published schedule."""

import math

import pytest

from hubertlab.models.spidr_config import DistillConfig
from hubertlab.tasks import build_task
from hubertlab.train.config import train_config_from_dict


def lag(decay: float) -> float:
    return 1.0 / (1.0 - decay)


def first_frozen_step(cfg: DistillConfig, last: int) -> int | None:
    return next((s for s in range(1, last + 1) if cfg.teacher_decay(s) == 1.0), None)


def test_unset_keeps_the_published_schedule():
    base = DistillConfig.preset("spidr", "base")
    assert base.for_run(2_300) is base


@pytest.mark.parametrize("max_steps", [2_300, 40_000])
def test_spidr_lags_and_freezes_at_the_same_fraction_of_the_run(max_steps):
    published = DistillConfig.preset("spidr", "base")
    scaled = DistillConfig.preset("spidr", "base", ema_schedule_steps=400_000).for_run(max_steps)
    scale = max_steps / 400_000
    assert scaled.ema_schedule_steps is None
    assert lag(scaled.teacher_decay(0)) == pytest.approx(lag(0.999) * scale)
    for fraction in (0.01, 0.05, 0.2):
        ours, theirs = round(fraction * max_steps), round(fraction * 400_000)
        assert lag(scaled.teacher_decay(ours)) == pytest.approx(
            lag(published.teacher_decay(theirs)) * scale, rel=1e-3
        )
    # Published: frozen from step ~184k of 400k (46 %); scaled: at the same fraction.
    frozen = first_frozen_step(scaled, max_steps)
    assert frozen == pytest.approx(0.46 * max_steps, rel=0.01)
    assert math.isclose(first_frozen_step(published, 400_000) / 400_000, 0.46, rel_tol=0.01)


def test_dinosr_steps_scale_too():
    scaled = DistillConfig.preset("dinosr", "base", ema_schedule_steps=400_000).for_run(4_000)
    assert (scaled.ema_final_step, scaled.ema_freeze_step) == (300, 2_000)
    assert lag(scaled.ema_start_decay) == pytest.approx(10.0)
    assert lag(scaled.ema_final_decay) == pytest.approx(100.0)
    assert scaled.teacher_decay(2_000) == 1.0


def test_a_lag_under_one_step_copies_the_student():
    cfg = DistillConfig.preset("spidr", "base", ema_schedule_steps=400_000).for_run(100)
    assert cfg.ema_start_decay == 0.0


def test_the_task_stretches_the_schedule_to_max_steps():
    cfg = train_config_from_dict(
        {
            "model": {
                "kind": "spidr",
                "preset": "tiny",
                "overrides": {"ema_schedule_steps": 400_000},
            },
            "data": {"train_manifest": "-"},
            "optim": {"max_steps": 4_000},
            "run": {"out_dir": "-"},
        }
    )
    model_cfg = build_task(cfg).distill_config
    assert model_cfg.ema_schedule_steps is None
    assert lag(model_cfg.ema_start_decay) == pytest.approx(10.0)
    assert model_cfg.ema_timescale == pytest.approx(200.0)


def test_bad_schedule_length_is_refused():
    with pytest.raises(ValueError, match="ema_schedule_steps"):
        DistillConfig.preset("spidr", "tiny", ema_schedule_steps=0)
