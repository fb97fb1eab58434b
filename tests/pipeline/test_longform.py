"""[longform]: the pipeline runs the long-form recipe itself (VAD -> spans -> validation split ->
tar shards -> the iterations), each a resumable, fingerprinted step; bad settings and a corpus
without speech are refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from hubertlab.config import ConfigError
from hubertlab.constants import SAMPLE_RATE, num_frames
from hubertlab.data.manifest import ManifestRow, read_manifest, relocate, write_manifest
from hubertlab.data.tar_shards import read_shard
from hubertlab.pipeline.config import load_pipeline_config
from hubertlab.pipeline.longform import MIN_VALID_RECORDINGS, split_spans
from hubertlab.pipeline.run import run_pipeline
from hubertlab.pipeline.runner import step_state
from hubertlab.pipeline.steps import build_steps
from tests.longform_fixtures import longform  # noqa: F401
from tests.train_fixtures import TINY_OVERRIDES

CONFIG = """
out_dir = "run"
[corpus]
train_manifest = "{manifest}"
[executor]
workers = 1
num_shards = 2
[longform]
vad = "energy"
{settings}
[train.model]
preset = "tiny"
[train.model.overrides]
{overrides}
[train.data]
batch_seconds = 6.0
max_crop_seconds = 2.0
num_workers = 0
[train.optim]
max_steps = 4
warmup_steps = 1
[train.run]
precision = "fp32"
ckpt_every = 2
valid_every = 2
progress_bar = false
num_threads = 1
[[iterations]]
features = "mfcc"
num_units = 8
kmeans_fraction = 1.0
"""


def _config(folder: Path, manifest: Path, settings: str = "") -> Path:
    overrides = "\n".join(f"{k} = {json.dumps(v)}" for k, v in TINY_OVERRIDES.items())
    path = folder / "pipeline.toml"
    path.write_text(CONFIG.format(manifest=manifest, settings=settings, overrides=overrides))
    return path


def test_the_pipeline_runs_the_long_form_recipe_and_resumes(tmp_path, longform):  # noqa: F811
    config = _config(tmp_path, longform / "manifest.csv", "shards = 2")
    run_pipeline(config)
    run = tmp_path / "run"
    train = read_manifest(run / "longform" / "spans" / "train.csv")
    valid = read_manifest(run / "longform" / "spans" / "valid.csv")
    assert len(train) > 2 and len(valid) >= 1
    assert not {r.fileid for r in train} & {r.fileid for r in valid}
    for row in list(train) + list(valid):  # 2-30 s speech spans of the recordings
        assert 2 * SAMPLE_RATE <= row.num_samples <= 30 * SAMPLE_RATE and row.start is not None
    samples = list(read_shard(run / "iteration1" / "shards" / "shard-000000.tar"))
    assert samples and all(len(s["units"]) == num_frames(len(s["audio"])) for s in samples)
    summary = json.loads((run / "iteration1" / "train" / "DONE.json").read_text())["summary"]
    assert summary["step"] == 4
    report = (run / "report.md").read_text()
    assert "## Long-form recordings" in report and "energy VAD" in report
    assert "split from the training recordings" in report and "2 tar shards" in report

    # Run again: every step is done; another VAD makes the VAD and all after it stale.
    cfg = load_pipeline_config(config)
    assert {step_state(s) for s in build_steps(cfg)} == {"done"}
    config.write_text(config.read_text().replace('vad = "energy"', 'vad = "silero"'))
    states = {s.name: step_state(s) for s in build_steps(load_pipeline_config(config))}
    assert states["longform/vad"] == "stale" and states["iteration1/train"] == "stale"


def test_settings_are_checked_when_the_config_is_read(tmp_path):
    manifest = tmp_path / "m.csv"
    write_manifest([ManifestRow("a", "a.flac", 32000)], manifest)
    bad = {
        'selection = "ups"': "needs an hour budget",
        "hours = 1.0": "only with selection = 'ups'",
        "valid_fraction = 1.0": "valid_fraction",
        "shards = -1": "shards must be >= 0",
        "max_seconds = 3.0": "max_s",
        'vad = "webrtc"': "vad",
    }
    for line, message in bad.items():
        text = _config(tmp_path, manifest, line).read_text()
        if line.startswith("vad"):
            text = text.replace('vad = "energy"\n', "")
        (tmp_path / "pipeline.toml").write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_pipeline_config(tmp_path / "pipeline.toml")
    # A missing language-ID file is named before any step runs.
    text = _config(tmp_path, manifest, 'selection = "ups"\nhours = 1.0\nlid = "no.jsonl"')
    with pytest.raises(FileNotFoundError, match="longform.lid: not found: .*no.jsonl"):
        run_pipeline(text)
    assert not (tmp_path / "run" / "longform").exists()
    # Without [longform], a validation manifest is required.
    text = _config(tmp_path, manifest).read_text().replace('[longform]\nvad = "energy"\n', "")
    (tmp_path / "pipeline.toml").write_text(text)
    with pytest.raises(ConfigError, match="missing required key .valid_manifest."):
        load_pipeline_config(tmp_path / "pipeline.toml")


def test_recordings_without_speech_are_refused(tmp_path):
    silence = np.zeros(SAMPLE_RATE * 20, np.float32)
    rows = []
    for i in range(2):
        sf.write(tmp_path / f"quiet{i}.flac", silence, SAMPLE_RATE)
        rows.append(ManifestRow(f"quiet{i}", f"quiet{i}.flac", len(silence)))
    write_manifest(rows, tmp_path / "m.csv")
    with pytest.raises(ValueError, match=r"m.csv: the VAD found no speech span in it"):
        run_pipeline(_config(tmp_path, tmp_path / "m.csv"))
    assert not (tmp_path / "run" / "iteration1" / "features").exists()  # nothing trained on it


def test_validation_takes_whole_recordings_when_there_are_many():
    def spans(recordings: int) -> list[ManifestRow]:
        return [
            ManifestRow(f"r{r}_{i}", f"r{r}.flac", 48000, start=i * 48000)
            for r in range(recordings)
            for i in range(5)
        ]

    train, valid = split_spans(spans(MIN_VALID_RECORDINGS), 0.1, 0, Path("m.csv"))
    assert {r.path for r in train}.isdisjoint(r.path for r in valid)
    assert len({r.path for r in valid}) == 2  # 10% of 20 recordings
    train, valid = split_spans(spans(2), 0.1, 0, Path("m.csv"))  # a few long recordings
    assert len(valid) == 1 and {r.path for r in train} == {"r0.flac", "r1.flac"}
    with pytest.raises(ValueError, match="too few to split off a validation set"):
        split_spans(spans(1)[:1], 0.1, 0, Path("m.csv"))


def test_the_ups_selection_with_validation_recordings(tmp_path, longform):  # noqa: F811
    rows = list(read_manifest(longform / "manifest.csv"))
    write_manifest(relocate(rows[:1], longform, tmp_path / "t.csv"), tmp_path / "t.csv")
    write_manifest(relocate(rows[1:], longform, tmp_path / "v.csv"), tmp_path / "v.csv")
    lid = longform / "speech.jsonl"  # the true speech with its languages, as language-ID
    settings = f'selection = "ups"\nhours = 0.005\nlid = "{lid}"\nchunk_seconds = 6.0\n'
    settings += "min_speech_seconds = 3.0\nmin_density = 0.1"
    config = _config(tmp_path, tmp_path / "t.csv", settings)
    text = config.read_text().replace("[executor]", 'valid_manifest = "v.csv"\n[executor]', 1)
    config.write_text(text)
    run_pipeline(config)
    spans = tmp_path / "run" / "longform" / "spans"
    train, valid = read_manifest(spans / "train.csv"), read_manifest(spans / "valid.csv")
    assert {Path(r.path).name for r in train} == {"rec_0000.flac"}
    assert {Path(r.path).name for r in valid} == {"rec_0001.flac"}
    assert all(r.num_samples == 6 * SAMPLE_RATE for r in train)  # whole UPS chunks
    assert 3 <= len(train) <= 4  # 18 s of budget: chunks kept whole, under one chunk over
    summary = json.loads((spans / "selection" / "summary.json").read_text())
    assert summary["budget_met"] and set(summary["hours_after"]) <= {"en", "fr"}
    report = (tmp_path / "run" / "report.md").read_text()
    assert "- valid recordings: 1" in report and "split from" not in report
