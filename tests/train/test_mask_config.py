"""The [mask] table: one span-mask config for every task that masks; the keys it took over from
[model.overrides] still read (with a warning), stored model configs holding them still load,
and finished pipeline steps stay valid whichever place a config sets them in."""

from __future__ import annotations

import logging

import pytest

from hubertlab.config import ConfigError, to_dict
from hubertlab.data.masking import MaskConfig
from hubertlab.demo.recipe import DISTILL_TEMPLATE, PIPELINE_TEMPLATE
from hubertlab.models.config import HubertConfig
from hubertlab.models.spidr_config import DistillConfig
from hubertlab.pipeline.config import load_pipeline_config
from hubertlab.pipeline.steps import build_steps, train_config
from hubertlab.train.config import load_train_config
from tests.tasks.test_spidr import write_config as write_distill_config
from tests.train_fixtures import write_config

FAKE = ("train.csv", "units.jsonl")  # never opened: loading the config must not touch data
CUSTOM = {"mask_prob": 0.65, "mask_length": 5, "min_masks": 1}


def config(tmp_path, mask: dict | None = None, kind: str = "hubert", **sections):
    if kind == "hubert":
        path = write_config(tmp_path / "c.toml", FAKE, tmp_path / "run", **sections)
    else:
        path = write_distill_config(
            tmp_path / "c.toml", FAKE[0], tmp_path / "run", kind, **sections
        )
    if mask is not None:
        lines = "".join(f"{k} = {v}\n" for k, v in mask.items())
        path.write_text(path.read_text() + f"\n[mask]\n{lines}")
    return path


def test_the_mask_table_is_read_and_defaults_to_hubert_masking(tmp_path):
    assert load_train_config(config(tmp_path)).mask == MaskConfig(0.8, 10, 2)
    assert load_train_config(config(tmp_path, CUSTOM)).mask == MaskConfig(**CUSTOM)


def test_old_model_override_keys_read_as_mask_with_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        old = load_train_config(config(tmp_path, model__overrides=CUSTOM))
    assert old.mask == MaskConfig(**CUSTOM)
    assert not set(CUSTOM) & set(old.model.overrides)
    for key in CUSTOM:
        assert f"model.overrides.{key} is deprecated" in caplog.text
        assert f"mask.{key}" in caplog.text
    assert to_dict(old) == to_dict(load_train_config(config(tmp_path, CUSTOM)))


@pytest.mark.parametrize("kind", ["spidr", "dinosr"])
def test_self_distillation_reads_the_same_table(tmp_path, kind):
    old = load_train_config(config(tmp_path, kind=kind, model__overrides={"mask_prob": 0.5}))
    new = load_train_config(config(tmp_path, {"mask_prob": 0.5}, kind=kind))
    assert old.mask == new.mask == MaskConfig(mask_prob=0.5)


@pytest.mark.parametrize(
    ("mask", "overrides", "message"),
    [
        ({"mask_prob": 1.5}, {}, r"mask: mask_prob: must be in \[0, 1\]"),
        ({"mask_length": 0}, {}, r"mask: mask_length: must be >= 1"),
        ({"no_overlap": "true"}, {}, r"mask: unknown key 'no_overlap'"),
        ({"mask_prob": 0.5}, {"mask_prob": 0.5}, r"model\.overrides\.mask_prob and mask\.mask"),
    ],
)
def test_bad_mask_settings_are_named(tmp_path, mask, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_train_config(config(tmp_path, mask, model__overrides=overrides))


def test_stored_model_configs_with_mask_keys_still_load(caplog):
    """Checkpoints written while the model configs held the mask settings."""
    hubert = {**to_dict(HubertConfig.preset("tiny")), **CUSTOM}
    distill = {**to_dict(DistillConfig.preset("spidr", "tiny")), "mask_prob": 0.8}
    with caplog.at_level(logging.INFO):
        assert HubertConfig.from_dict(hubert) == HubertConfig.preset("tiny")
        assert DistillConfig.from_dict(distill) == DistillConfig.preset("spidr", "tiny")
    assert "mask_prob = 0.65 is not used" in caplog.text  # a default value goes unmentioned
    assert caplog.text.count("is not used") == len(CUSTOM)


@pytest.mark.parametrize("template", ["hubert", "spidr"])
def test_pipeline_fingerprints_do_not_depend_on_where_the_mask_is_set(tmp_path, template):
    """A [train.mask] table and the old [train.model.overrides] keys describe the same work; a
    default mask changes no fingerprint recorded before the table existed."""
    text = (
        PIPELINE_TEMPLATE.format(
            config_name="c",
            seed=0,
            workers=1,
            steps=20,
            continue_steps=10,
            ckpt_every=5,
            continue_ckpt_every=5,
        )
        if template == "hubert"
        else DISTILL_TEMPLATE.format(
            config_name="c", kind="spidr", name="SpidR", seed=0, workers=1, steps=20, ckpt_every=5
        )
    )
    keys = "mask_prob = 0.65\nmask_length = 5\n"
    variants = {
        "plain": text,
        "default": text + "\n[train.mask]\nmask_prob = 0.8\n",
        "old": text.replace("[train.model.overrides]\n", f"[train.model.overrides]\n{keys}", 1),
        "new": text + f"\n[train.mask]\n{keys}",
    }
    assert variants["old"] != text
    fingerprints = {}
    for name, body in variants.items():
        path = tmp_path / f"{name}.toml"
        path.write_text(body)
        cfg = load_pipeline_config(path)
        expected = 0.65 if name in ("old", "new") else 0.8
        assert train_config(cfg, 1).mask.mask_prob == expected
        fingerprints[name] = {s.name: s.fingerprint for s in build_steps(cfg)}
    assert fingerprints["default"] == fingerprints["plain"]
    assert fingerprints["new"] == fingerprints["old"] != fingerprints["plain"]
