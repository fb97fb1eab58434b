"""The pipeline: config checks, status, and a killed run that ends like an uninterrupted one."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hubertlab.cli import main
from hubertlab.config import ConfigError
from hubertlab.data.alignments import read_phone_segments
from hubertlab.data.manifest import read_manifest
from hubertlab.demo.recipe import build_corpora
from hubertlab.evaluate.units import unit_quality
from hubertlab.pipeline.config import load_pipeline_config
from hubertlab.pipeline.run import pipeline_status, run_pipeline
from hubertlab.pipeline.runner import StaleStepError
from hubertlab.units.assign import read_units

SMALL_MODEL = """
[train.model]
preset = "tiny"
[train.model.overrides]
conv_channels = [32, 32, 32, 32, 32, 32, 32]
hidden_dim = 64
num_layers = 2
num_heads = 2
ffn_dim = 128
final_dim = 32
pos_conv_kernel = 16
pos_conv_groups = 4
dropout = 0.0
attention_dropout = 0.0
input_dropout = 0.0
"""

CONFIG = (
    """
out_dir = "run"
seed = 0
[corpus]
train_manifest = "corpus/train/manifest.train.csv"
valid_manifest = "corpus/train/manifest.valid.csv"
eval_manifest = "corpus/eval/manifest.csv"
eval_phones = "corpus/eval/phones.jsonl"
eval_abx_item = "corpus/eval/abx.item"
[executor]
kind = "local"
workers = 1
[train.data]
min_crop_seconds = 1.0
max_crop_seconds = 2.0
batch_seconds = 8.0
num_workers = 0
[train.optim]
lr = 2e-3
max_steps = 12
[train.run]
precision = "fp32"
ckpt_every = 4
valid_every = 4
log_every = 2
progress_bar = false
num_threads = 1
[[iterations]]
features = "mfcc"
num_units = 12
kmeans_fraction = 1.0
[[iterations]]
features = "layer"
layer = "best"
num_units = 12
kmeans_fraction = 1.0
init = "previous"
"""
    + SMALL_MODEL
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pipeline")
    build_corpora(
        root / "corpus",
        train_minutes=0.8,
        eval_minutes=1.0,
        speakers=2,
        valid_fraction=0.2,
        workers=1,
    )
    return root


def _config(root: Path, name: str, text: str = CONFIG) -> Path:
    path = root / f"{name}.toml"
    path.write_text(text.replace('out_dir = "run"', f'out_dir = "{name}"'))
    return path


def test_config_errors_name_the_key(corpus):
    bad = _config(corpus, "bad1", CONFIG.replace("seed = 0", "seed = 0\nsed = 1"))
    with pytest.raises(ConfigError, match="unknown key 'sed'"):
        load_pipeline_config(bad)
    bad = _config(corpus, "bad2", CONFIG.replace("max_steps = 12", "max_step = 12"))
    with pytest.raises(ConfigError, match="iteration 1: .*unknown key 'max_step'"):
        load_pipeline_config(bad)
    bad = _config(corpus, "bad3", CONFIG.replace('layer = "best"', 'layer = "top"'))
    with pytest.raises(ConfigError, match="layer must be a number or 'best'"):
        load_pipeline_config(bad)
    bad = _config(corpus, "bad4", CONFIG.replace("[train.data]", "[train.data]\nnum_units = [3]"))
    with pytest.raises(ConfigError, match="num_units: set by the pipeline"):
        load_pipeline_config(bad)


def _run(config: Path, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    return subprocess.Popen(
        [sys.executable, "-m", "hubertlab.cli", "pipeline", str(config)],
        cwd=config.parent,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        **kwargs,
    )


def _fingerprint(run_dir: Path) -> dict[str, str]:
    """Hashes of what the run produced: models, k-means, units, ABX and quality numbers."""
    out = {}
    patterns = (
        "*/model/model.safetensors",
        "*/kmeans/model/*.npy",
        "*/units/*/units.jsonl",
        "*/quality/quality.json",
    )
    for pattern in patterns:
        for path in sorted(run_dir.glob(pattern)):
            out[str(path.relative_to(run_dir))] = hashlib.sha256(path.read_bytes()).hexdigest()
    for path in sorted(run_dir.glob("*/abx.json")) + sorted(run_dir.glob("*/abx/abx.json")):
        report = json.loads(path.read_text())  # its "source" names the run folder: left out
        out[str(path.relative_to(run_dir))] = json.dumps([report["scores"], report["best"]])
    return out


def test_killed_pipeline_ends_like_an_uninterrupted_one(corpus):
    straight = _config(corpus, "straight")
    start = time.monotonic()
    proc = _run(straight)
    _, err = proc.communicate(timeout=900)
    seconds = time.monotonic() - start
    assert proc.returncode == 0, err.decode()[-3000:]
    expected = _fingerprint(corpus / "straight")
    assert {
        "iteration2/model/model.safetensors",
        "iteration3/units/eval/units.jsonl",
        "iteration2/abx/abx.json",
        "baseline/abx.json",
    } <= set(expected)
    assert "done" in pipeline_status(straight) and "pending" not in pipeline_status(straight)

    killed = _config(corpus, "killed")
    kills = 0
    # Kills at growing fractions of the uninterrupted run's time land in different steps;
    # each restart resumes, so the last run, never killed, finishes the work.
    for fraction in (0.3, 0.4, 0.5, None):
        proc = _run(killed)
        try:
            proc.wait(timeout=None if fraction is None else max(3.0, fraction * seconds))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            continue
        assert proc.returncode == 0, proc.stderr.read().decode()[-3000:]
        break
    assert kills >= 2
    assert _fingerprint(corpus / "killed") == expected
    report = (corpus / "killed" / "report.md").read_text()
    assert "PNMI" in report and "iteration 2" in report
    assert "| MFCC + CMVN (baseline) |" in report and "| MFCC (raw) (baseline) |" in report
    # The report opens with each iteration's best layer against MFCC + CMVN, said plainly.
    opening = report.split("## Where it stands")[1].split("## Unit quality")[0]
    assert "| iteration 1 |" in opening and "| iteration 2 |" in opening
    assert re.search(r"within: (model|baseline) ahead by \d+\.\d\d", opening), opening
    assert json.loads((corpus / "killed" / "iteration1" / "abx" / "best_layer.json").read_text())


def test_demo_writes_a_config_that_loads(tmp_path):
    from hubertlab.demo.recipe import DemoSettings, prepare_demo
    from hubertlab.pipeline.config import train_config

    settings = DemoSettings(
        train_minutes=0.3,
        eval_minutes=0.2,
        speakers=2,
        train_steps=8,
        continue_steps=4,
        workers=1,
    )
    config = prepare_demo(tmp_path / "demo", settings)
    cfg = load_pipeline_config(config)
    assert [it.features for it in cfg.iterations] == ["mfcc", "layer"]
    assert cfg.iterations[0].cmvn  # k-means on MFCC normalised per utterance
    assert cfg.iterations[1].init == "previous"
    assert [train_config(cfg, k).optim.max_steps for k in (1, 2)] == [8, 4]
    assert [train_config(cfg, k).run.ckpt_every for k in (1, 2)] == [1, 1]
    assert train_config(cfg, 2).run.valid_every == 1 and train_config(cfg, 2).run.keep_last == 1
    default_steps = DemoSettings(train_minutes=0.3, eval_minutes=0.2, speakers=2, workers=1)
    cadence = load_pipeline_config(prepare_demo(tmp_path / "steps", default_steps))
    assert [train_config(cadence, k).run.ckpt_every for k in (1, 2)] == [375, 250]
    assert [train_config(cadence, k).run.valid_every for k in (1, 2)] == [375, 250]
    train = read_manifest(cfg.corpus.train_manifest)
    valid = read_manifest(cfg.corpus.valid_manifest)
    assert len(train) and len(valid)
    assert not {r.fileid for r in train} & {r.fileid for r in valid}
    assert "pending  baseline/abx-mfcc" in pipeline_status(config)
    with pytest.raises(ValueError, match="--steps"):
        DemoSettings(train_steps=0)
    with pytest.raises(ValueError, match="--continue-steps"):
        DemoSettings(continue_steps=0)


def test_next_targets_follow_the_last_iterations_layer(tmp_path):
    from hubertlab.pipeline.steps import next_targets

    corpus = tmp_path / "corpus"
    for name in ("train/manifest.train.csv", "train/manifest.valid.csv", "eval/manifest.csv"):
        (corpus / name).parent.mkdir(parents=True, exist_ok=True)
    best = load_pipeline_config(_config(tmp_path, "best", CONFIG))
    assert next_targets(best).layer == "best"
    fixed = load_pipeline_config(
        _config(tmp_path, "fixed", CONFIG.replace('layer = "best"', "layer = 2"))
    )
    assert next_targets(fixed).layer == 2
    assert next_targets(fixed).num_units == fixed.iterations[-1].num_units
    off = load_pipeline_config(_config(tmp_path, "off", "final_units = false\n" + CONFIG))
    assert next_targets(off) is None


@pytest.mark.slow
def test_tiny_model_learns_on_the_demo_corpus(tmp_path):
    """One iteration with MFCC units: validation loss falls and masked accuracy ends far
    above chance. Run by .ci/run's slow step (about 2 minutes on 2 cores)."""
    from hubertlab.pipeline.run import run_pipeline
    from hubertlab.train.metrics import read_metrics

    build_corpora(
        tmp_path / "corpus",
        train_minutes=4.0,
        eval_minutes=1.0,
        speakers=4,
        valid_fraction=0.1,
        workers=2,
    )
    text = CONFIG.split("[[iterations]]")[0] + '[[iterations]]\nfeatures = "mfcc"\nnum_units = 50\n'
    text = text.replace(SMALL_MODEL, "").replace("max_steps = 12", "max_steps = 300")
    text = text.replace("ckpt_every = 4", "ckpt_every = 100").replace(
        "valid_every = 4", "valid_every = 100"
    )
    text = (
        text.replace('precision = "fp32"', 'precision = "bf16"')
        .replace("num_threads = 1", "num_threads = 2")
        .replace("batch_seconds = 8.0", "batch_seconds = 16.0")
    )
    text += '\n[train.model]\npreset = "tiny"\n[abx]\nenabled = false\n'
    config = _config(tmp_path, "learn", text)
    run_pipeline(config)
    valid_records = [
        r
        for r in read_metrics(tmp_path / "learn" / "iteration1" / "train" / "metrics.jsonl")
        if r["split"] == "valid"
    ]
    losses = [r["loss"] for r in valid_records]
    assert len(losses) == 3 and losses[-1] < losses[0] - 0.5, losses
    assert valid_records[-1]["masked_acc"] > 5 * (1 / 50), valid_records[-1]


def test_a_changed_config_is_never_reused_silently(corpus):
    """Finished steps record what they depend on: after num_units changes, the run stops
    naming the stale step and the key (pipeline.json untouched); --redo-stale redoes that step
    and everything downstream; status shows the stale steps."""
    one = CONFIG.split("[[iterations]]")[0] + (
        '[[iterations]]\nfeatures = "mfcc"\nnum_units = 12\nkmeans_fraction = 1.0\n'
        "[abx]\nenabled = false\n" + SMALL_MODEL
    ).replace("max_steps = 12", "max_steps = 2")
    one = one.replace("final_units = true", "")
    config = _config(corpus, "stale", one.replace("max_steps = 12", "max_steps = 2"))
    run_pipeline(config)
    before = (corpus / "stale" / "pipeline.json").read_text()
    changed = _config(corpus, "stale", one.replace("num_units = 12", "num_units = 13"))
    with pytest.raises(StaleStepError, match=r"iteration1/kmeans.*num_units"):
        run_pipeline(changed)
    assert (corpus / "stale" / "pipeline.json").read_text() == before
    status = pipeline_status(changed)
    assert "stale    iteration1/kmeans" in status and "stale    iteration1/train" in status
    assert "done     iteration1/features" in status
    assert main(["pipeline", str(changed)]) == 1
    run_pipeline(changed, redo_stale=True)
    meta = json.loads(
        (corpus / "stale" / "iteration1" / "units" / "train" / "units.json").read_text()
    )
    assert meta["k"] == 13 and "stale" not in pipeline_status(changed)
    state = torch.load(
        next((corpus / "stale" / "iteration1" / "train" / "checkpoints").glob("step_*.pt")),
        weights_only=True,
    )
    assert state["model_config"]["num_units"] == [13]


def test_input_paths_are_checked_before_the_first_step(corpus):
    bad = _config(
        corpus, "paths", CONFIG.replace("corpus/eval/phones.jsonl", "corpus/eval/phones.jsnl")
    )
    with pytest.raises(FileNotFoundError, match=r"corpus\.eval_phones: not found"):
        run_pipeline(bad)
    assert not (corpus / "paths").exists()


SPIDR_ITERATION = """
[[iterations]]
num_units = 12
[iterations.train.model]
kind = "spidr"
preset = "tiny"
[iterations.train.model.overrides]
conv_channels = [32, 32, 32, 32, 32, 32, 32]
hidden_dim = 64
num_layers = 2
num_heads = 2
ffn_dim = 128
pos_conv_groups = 4
num_codebooks = 2
codebook_size = 16
[[iterations]]
features = "layer"
layer = 2
num_units = 12
kmeans_fraction = 1.0
"""


def test_a_spidr_iteration_runs_in_the_pipeline(corpus):
    """Iteration 1 is SpidR (no features, k-means or units: self-distillation), iteration 2 a
    HuBERT trained on k-means units of the SpidR model's layer 2."""
    text = CONFIG.split("[[iterations]]")[0].replace("max_steps = 12", "max_steps = 4")
    text += "[abx]\nmax_tokens_per_group = 5\n" + SPIDR_ITERATION
    text += SMALL_MODEL.replace("[train.model]", "[iterations.train.model]").replace(
        "[train.model.overrides]", "[iterations.train.model.overrides]"
    )
    config = _config(corpus, "spidr", text)
    run_pipeline(config)
    run = corpus / "spidr"
    assert not (run / "iteration1" / "units").exists()  # SpidR needs none
    assert json.loads((run / "iteration1" / "model" / "config.json").read_text())
    state = torch.load(
        next((run / "iteration1" / "train" / "checkpoints").glob("step_*.pt")), weights_only=True
    )
    assert state["model_kind"] == "spidr"
    units = json.loads((run / "iteration2" / "units" / "train" / "units.json").read_text())
    assert units["feature"]["layer"] == 2 and units["k"] == 12
    assert "pending" not in pipeline_status(config)
    report = (run / "report.md").read_text()
    assert "iteration 1, layer 1" in report and "iteration 2 targets" in report
    # The codebook heads' units (layers 1 and 2: two codebooks), scored as k-means units are.
    codebooks = json.loads((run / "iteration1" / "codebooks" / "quality.json").read_text())
    assert set(codebooks["layers"]) == {"1", "2"}
    phones = read_phone_segments(corpus / "corpus" / "eval" / "phones.jsonl")
    units = read_units(run / "iteration1" / "codebooks" / "layer2")
    assert codebooks["layers"]["2"] == unit_quality(units, phones)
    assert "iteration 1, head of layer 2" in report


def test_cmvn_targets_in_both_iterations(corpus):
    """`cmvn = true`: MFCC and layer features normalised per utterance before k-means, in the
    store, the k-means, the units of every split (computed on the fly alike) and the report."""
    text = CONFIG.replace("max_steps = 12", "max_steps = 4").replace("valid_every = 4", "")
    text = text.replace("kmeans_fraction = 1.0\n", "kmeans_fraction = 1.0\ncmvn = true\n")
    text = text.replace("seed = 0", "seed = 0\nfinal_units = false")
    config = _config(corpus, "cmvn", text + "[abx]\nmax_tokens_per_group = 5\n")
    run_pipeline(config)
    run = corpus / "cmvn"
    for k in (1, 2):
        root = run / f"iteration{k}"
        store = json.loads((root / "features" / "store" / "store.json").read_text())
        assert store["extractor"]["cmvn"] is True
        for split in ("train", "eval"):
            units = json.loads((root / "units" / split / "units.json").read_text())
            assert units["feature"]["cmvn"] is True
    report = (run / "report.md").read_text()
    assert "| MFCC + CMVN |" in report and "iteration 1, layer" in report
    assert re.search(r"\| iteration 1, layer \d \+ CMVN \|", report)
