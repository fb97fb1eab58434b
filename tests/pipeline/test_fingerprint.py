"""Step fingerprints are recorded in every finished step's DONE.json: a change in how they are
computed makes finished runs stale (redone after an upgrade). The values below were computed
before the steps declared their own inputs (hubertlab.pipeline.steps)."""

from __future__ import annotations

from hubertlab.fingerprint import digest
from hubertlab.pipeline.config import load_pipeline_config
from hubertlab.pipeline.steps import build_steps

CONFIG = """
out_dir = "run"
[corpus]
train_manifest = "train.csv"
valid_manifest = "valid.csv"
eval_manifest = "eval.csv"
eval_phones = "phones.jsonl"
eval_abx_item = "abx.item"
[executor]
num_shards = 2
[[iterations]]
num_units = 12
[[iterations]]
features = "layer"
layer = "best"
"""

# The steps whose fingerprints hold no path (training's holds the run's folders).
EXPECTED = {
    "baseline/abx-mfcc": "9193589f0daa6a3f",
    "iteration1/features": "0fb7ef2872b2baf0",
    "iteration1/kmeans": "11bf439b315b3127",
    "iteration1/units": "5684fdbd018440a5",
    "iteration1/quality": "e422839ee808f013",
}


def test_fingerprints_of_finished_steps_stay_the_same(tmp_path):
    for name in ("train.csv", "valid.csv", "eval.csv", "phones.jsonl", "abx.item"):
        (tmp_path / name).write_text(f"{name}\n")
    (tmp_path / "pipeline.toml").write_text(CONFIG)
    steps = build_steps(load_pipeline_config(tmp_path / "pipeline.toml"))
    fingerprints = {step.name: digest(step.fingerprint) for step in steps}
    assert {name: fingerprints[name] for name in EXPECTED} == EXPECTED
    # Each step reads what the step before it was made from: a change upstream reaches it.
    by_name = {step.name: step.fingerprint for step in steps}
    assert by_name["iteration1/kmeans"]["features"] == digest(
        {k: v for k, v in by_name["iteration1/features"].items() if k != "format"}
    )
    assert by_name["iteration2/features"]["source"]["abx"] == digest(
        {k: v for k, v in by_name["iteration1/abx"].items() if k != "format"}
    )


def test_loggers_make_no_finished_step_stale(tmp_path):
    """Where metrics go changes nothing a step computes: `[train.run] loggers` and the W&B
    keys (and the older `tensorboard`) leave every fingerprint as it was."""
    for name in ("train.csv", "valid.csv", "eval.csv", "phones.jsonl", "abx.item"):
        (tmp_path / name).write_text(f"{name}\n")
    watched = CONFIG + (
        '[train.run]\nloggers = ["tensorboard", "wandb"]\ntensorboard = true\n'
        'wandb_project = "mine"\nwandb_name = "first try"\nwandb_mode = "online"\n'
    )
    fingerprints = []
    for name, text in (("plain", CONFIG), ("watched", watched)):
        (tmp_path / f"{name}.toml").write_text(text)
        steps = build_steps(load_pipeline_config(tmp_path / f"{name}.toml"))
        fingerprints.append({step.name: digest(step.fingerprint) for step in steps})
    assert fingerprints[0] == fingerprints[1]


def test_speed_perturbation_left_at_its_default_keeps_finished_training_valid(tmp_path):
    """Runs trained before [train.data] speed_perturb existed have no such key in their
    fingerprint: the default leaves it out; a factor makes training (and what follows) stale."""
    for name in ("train.csv", "valid.csv", "eval.csv", "phones.jsonl", "abx.item"):
        (tmp_path / name).write_text(f"{name}\n")
    found = {}
    for name, extra in (
        ("plain", ""),
        ("default", "[train.data]\nspeed_perturb = []\n"),
        ("perturbed", "[train.data]\nspeed_perturb = [0.9, 1.0, 1.1]\n"),
    ):
        (tmp_path / f"{name}.toml").write_text(CONFIG + extra)
        steps = build_steps(load_pipeline_config(tmp_path / f"{name}.toml"))
        found[name] = {step.name: step.fingerprint for step in steps}
    train = found["plain"]["iteration1/train"]["train"]
    assert "speed_perturb" not in train["data"] and "min_crop_seconds" in train["data"]
    assert found["default"] == found["plain"]
    perturbed = found["perturbed"]["iteration1/train"]["train"]["data"]
    assert perturbed["speed_perturb"] == [0.9, 1.0, 1.1]
    assert found["perturbed"]["iteration1/abx"] != found["plain"]["iteration1/abx"]


def test_cmvn_targets_left_at_the_default_keep_finished_steps_valid(tmp_path):
    """`[[iterations]] cmvn` is in a features step's fingerprint only when set: runs from
    before the key stay valid; setting it makes the targets (and what follows) stale."""
    for name in ("train.csv", "valid.csv", "eval.csv", "phones.jsonl", "abx.item"):
        (tmp_path / name).write_text(f"{name}\n")
    found = {}
    for name, value in (("plain", None), ("default", "false"), ("normalised", "true")):
        text = CONFIG if value is None else CONFIG.replace("12\n", f"12\ncmvn = {value}\n", 1)
        (tmp_path / f"{name}.toml").write_text(text)
        steps = build_steps(load_pipeline_config(tmp_path / f"{name}.toml"))
        found[name] = {step.name: digest(step.fingerprint) for step in steps}
    assert found["default"] == found["plain"]
    changed = {n for n in found["plain"] if found["plain"][n] != found["normalised"][n]}
    assert {"iteration1/features", "iteration1/kmeans", "iteration1/units"} <= changed
    assert "baseline/abx-mfcc" not in changed
