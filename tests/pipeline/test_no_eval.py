"""A run without an evaluation corpus (checkpoints by validation loss, the configured layer,
and a report that says so), and the synthetic evaluation corpus labelled in the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hubertlab.config import ConfigError
from hubertlab.data.manifest import ManifestRow, write_manifest
from hubertlab.pipeline.config import load_pipeline_config
from hubertlab.pipeline.report import write_report
from hubertlab.pipeline.steps import build_steps, next_targets

CONFIG = """
out_dir = "run"
[corpus]
train_manifest = "m.csv"
valid_manifest = "m.csv"
{eval}
[train.model]
preset = "tiny"
[train.optim]
max_steps = 10
[[iterations]]
features = "mfcc"
num_units = 10
[[iterations]]
features = "layer"
layer = {layer}
num_units = 10
"""
EVAL = """eval_manifest = "eval/manifest.csv"
eval_phones = "eval/phones.jsonl"
eval_abx_item = "eval/abx.item"
"""


def _config(tmp_path: Path, *, layer: str = "2", eval_corpus: bool = False) -> Path:
    write_manifest([ManifestRow("a", "a.flac", 32000), ManifestRow("b", "b.flac", 32000)],
                   tmp_path / "m.csv")  # fmt: skip
    if eval_corpus:
        (tmp_path / "eval").mkdir(exist_ok=True)
        write_manifest([ManifestRow("e", "e.wav", 32000)], tmp_path / "eval" / "manifest.csv")
        (tmp_path / "eval" / "phones.jsonl").write_text("")
        (tmp_path / "eval" / "abx.item").write_text("#file onset offset #phone prev next spk\n")
    path = tmp_path / "pipeline.toml"
    path.write_text(CONFIG.format(eval=EVAL if eval_corpus else "", layer=layer))
    return path


def test_best_layer_needs_an_evaluation_corpus(tmp_path):
    with pytest.raises(ConfigError, match="give a layer number"):
        load_pipeline_config(_config(tmp_path, layer='"best"'))


def test_without_evaluation_the_report_says_how_choices_were_made(tmp_path):
    cfg = load_pipeline_config(_config(tmp_path))
    steps = build_steps(cfg)
    names = [s.name for s in steps]
    assert not any("abx" in n or "quality" in n or "baseline" in n for n in names)
    assert "iteration3/kmeans" in names  # the next targets: the configured layer, no ABX
    assert next_targets(cfg).layer == 2
    text = write_report(cfg, steps).read_text()
    assert "no evaluation corpus" in text and "validation loss" in text
    assert "iteration 2: layer 2" in text
    assert "held-out corpus" not in text


def test_the_synthetic_evaluation_corpus_is_labelled(tmp_path):
    cfg = load_pipeline_config(_config(tmp_path, eval_corpus=True))
    text = write_report(cfg, build_steps(cfg)).read_text()
    assert "SYNTHETIC" not in text  # the user's own corpus
    corpus = {"settings": {"languages": ["en", "fr"]}, "num_abx_items": 3}  # as demo/corpus.py
    (tmp_path / "eval" / "corpus.json").write_text(json.dumps(corpus))
    text = write_report(cfg, build_steps(cfg)).read_text()
    assert "SYNTHETIC (eSpeak voices in en, fr" in text
    assert "## ABX per layer on the held-out corpus (synthetic)" in text
