"""The long-form recipe of docs/long-form.md, start to finish on a small long-form demo corpus:
VAD -> segments (and UPS curation) -> MFCC units -> shards -> streaming training, then a resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hubertlab.cli import main
from hubertlab.constants import num_frames
from hubertlab.data.tar_shards import read_shard
from tests.train_fixtures import TINY_OVERRIDES

TRAIN_TOML = """
[model]
preset = "tiny"
[model.overrides]
{overrides}
[data]
train_shards = "{shards}"
num_units = [20]
shuffle_buffer = 50
max_crop_seconds = 2.0
batch_seconds = 6.0
num_workers = 2
[optim]
lr = 5e-4
warmup_steps = 3
max_steps = {steps}
[run]
out_dir = "{out}"
precision = "fp32"
log_every = 5
ckpt_every = 5
valid_every = 0
progress_bar = false
num_threads = 1
"""


@pytest.mark.slow
def test_the_long_form_recipe_runs_start_to_finish(tmp_path: Path, capsys):
    lf = tmp_path / "lf"
    steps = [
        ["demo-corpus", str(lf), "--long-form", "--hours", "0.1", "--recording-minutes", "3"],
        ["vad", f"{lf}/manifest.csv", f"{lf}/vad", "--backend", "energy"],
        ["segments", f"{lf}/vad", f"{lf}/manifest.csv", f"{lf}/segments.csv"],
        ["curate", f"{lf}/vad", f"{lf}/manifest.csv", f"{lf}/picked", "--hours", "0.02",
         "--lid", f"{lf}/speech.jsonl"],
        ["features", f"{lf}/segments.csv", f"{lf}/mfcc", "--kind", "mfcc"],
        ["kmeans", f"{lf}/mfcc", f"{lf}/kmeans", "--k", "20", "--fraction", "1"],
        ["transcribe", f"{lf}/segments.csv", f"{lf}/kmeans", f"{lf}/units", "--store",
         f"{lf}/mfcc"],
        ["shard", f"{lf}/segments.csv", f"{lf}/shards", "--num-shards", "3", "--units",
         f"{lf}/units"],
    ]  # fmt: skip
    for argv in steps:
        assert main(argv) == 0, argv
    samples = list(read_shard(lf / "shards" / "shard-000000.tar"))
    assert samples and all(len(s["units"]) == num_frames(len(s["audio"])) for s in samples)
    assert (lf / "picked" / "manifest.csv").is_file()

    overrides = "\n".join(f"{k} = {json.dumps(v)}" for k, v in TINY_OVERRIDES.items())
    config = tmp_path / "train.toml"
    fill = {"overrides": overrides, "shards": str(lf / "shards"), "out": str(tmp_path / "run")}
    config.write_text(TRAIN_TOML.format(steps=10, **fill))
    capsys.readouterr()
    assert main(["train", str(config)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 10 and summary["corrupt_skipped"] == 0
    assert summary["audio_seconds"] > 10 * 2.0  # several crops per batch
    # A longer run in the same folder continues from step 10.
    config.write_text(TRAIN_TOML.format(steps=15, **fill))
    assert main(["train", str(config)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 15
