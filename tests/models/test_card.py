"""The model card `export --to hf` writes: front matter the Hugging Face hub reads, and the
facts the source records (architecture, training hours, recipe, ABX), or "not recorded"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hubertlab import cli
from hubertlab.config import to_dict
from hubertlab.data.manifest import ManifestRow, write_manifest
from hubertlab.models.card import LICENCE_LINE, NOT_RECORDED, Provenance, read_provenance
from hubertlab.models.checkpoint import save_pretrained, training_checkpoint
from hubertlab.models.config import HubertConfig
from hubertlab.models.hubert import HubertModel
from hubertlab.train.config import load_train_config
from tests.train_fixtures import make_corpus, write_config

transformers = pytest.importorskip("transformers")
repocard = pytest.importorskip("huggingface_hub.repocard")


def tiny_model() -> HubertModel:
    torch.manual_seed(0)
    cfg = HubertConfig.from_dict(
        dict(conv_channels=(32,) * 7, hidden_dim=48, num_layers=3, num_heads=4, ffn_dim=96,
             final_dim=16, pos_conv_kernel=16, pos_conv_groups=4, num_units=(20,))
    )  # fmt: skip
    return HubertModel(cfg).eval()


def train_config(manifest: Path) -> dict:
    """The parts of a resolved TrainConfig the card reads."""
    return {
        "model": {"kind": "hubert", "preset": "base", "from_pretrained": None},
        "data": {"train_manifest": str(manifest), "num_units": [20], "batch_seconds": 87.5},
        "optim": {"lr": 5e-4, "schedule": "linear", "max_steps": 400},
        "run": {"out_dir": "run"},
    }


def write_hour_manifest(path: Path) -> Path:
    # 2 utterances of 30 min: 1 h.
    rows = [ManifestRow(f"u{i}", f"u{i}.flac", 1800 * 16000) for i in range(2)]
    write_manifest(rows, path)
    return path


def read_card(out: Path) -> tuple[dict, str]:
    text = (out / "README.md").read_text(encoding="utf-8")
    return repocard.metadata_load(out / "README.md"), text


def test_a_training_checkpoint_card_names_the_recipe_and_hours(tmp_path: Path):
    model = tiny_model()
    manifest = write_hour_manifest(tmp_path / "train.csv")
    state = training_checkpoint(
        model, step=300, counters={"audio_seconds": 7200.0}, train_config=train_config(manifest)
    )
    torch.save(state, tmp_path / "step.pt")
    assert cli.main(["export", str(tmp_path / "step.pt"), str(tmp_path / "hf")]) == 0

    meta, text = read_card(tmp_path / "hf")
    assert meta["library_name"] == "transformers"
    assert meta["pipeline_tag"] == "feature-extraction"
    assert {"audio", "speech", "hubert", "self-supervised"} <= set(meta["tags"])
    assert "license" not in meta and LICENCE_LINE in text  # left for the user to fill in
    card = __import__("huggingface_hub").ModelCard.load(tmp_path / "hf" / "README.md")
    assert card.data.library_name == "transformers"

    exported = transformers.HubertModel.from_pretrained(tmp_path / "hf")
    params = sum(p.numel() for p in exported.parameters())
    assert f"| parameters (this folder) | {params / 1e6:.1f}M ({params:,}) |" in text
    assert "| Transformer layers | 3 |" in text and "| hidden / FFN dim | 48 / 96 |" in text
    assert "7 conv layers, 32 channels" in text and "(50 Hz)" in text
    assert "| training audio | 1.00 h (2 utterances) |" in text
    assert "objective hubert, preset base" in text and "| steps | 300 of 400 |" in text
    assert "| units (k of each k-means) | 20 |" in text
    assert "| audio seen (repeats included) | 2.00 h |" in text
    assert "No ABX was measured" in text
    assert 'HubertModel.from_pretrained("hf")' in text and "hidden_states[1]" in text


def test_a_pipeline_model_folder_brings_its_abx_table(tmp_path: Path):
    root = tmp_path / "pipeline" / "iteration2"
    save_pretrained(tiny_model(), root / "model")
    manifest = write_hour_manifest(tmp_path / "train.csv")
    (root / "train" / "checkpoints").mkdir(parents=True)
    (root / "train" / "config.json").write_text(json.dumps({"train": train_config(manifest)}))
    (root / "train" / "checkpoints" / "best.json").write_text(
        json.dumps({"step": 250, "valid_loss": 3.0, "path": "step_00000250.pt"})
    )
    within = {"error_percent": 12.5, "num_triplets": 10, "num_cells": 2}
    across = {**within, "error_percent": 20.0}
    scores = [
        {"name": f"layer {k}", "layer": k, "within": within, "across": across} for k in range(4)
    ]
    best = {"name": "layer 2", "layer": 2, "criterion": "within"}
    (root / "abx").mkdir()
    (root / "abx" / "abx.json").write_text(json.dumps({"scores": scores, "best": best}))
    baseline = [{"name": "MFCC + CMVN", "layer": None, "within": {**within, "error_percent": 30.0}}]
    (tmp_path / "pipeline" / "baseline").mkdir()
    (tmp_path / "pipeline" / "baseline" / "abx.json").write_text(json.dumps({"scores": baseline}))

    assert cli.main(["export", str(root / "model"), str(tmp_path / "out"), "--to", "hf"]) == 0
    _, text = read_card(tmp_path / "out")
    assert "| pipeline iteration | 2 |" in text and "| steps | 250 of 400 |" in text
    assert "| layer 3 | 12.50 | 20.00 |" in text and "| MFCC + CMVN | 30.00 | - |" in text
    assert "Best: layer 2" in text and "hidden_states[2]" in text


def test_a_source_that_records_nothing_says_so(tmp_path: Path):
    model = tiny_model()
    torch.save(training_checkpoint(model), tmp_path / "bare.pt")
    assert read_provenance(tmp_path / "bare.pt").train is None
    # A folder outside a pipeline iteration: nothing beside it is taken for its history.
    save_pretrained(model, tmp_path / "elsewhere" / "model")
    (tmp_path / "elsewhere" / "abx").mkdir()
    (tmp_path / "elsewhere" / "abx" / "abx.json").write_text("{}")
    assert read_provenance(tmp_path / "elsewhere" / "model") == Provenance()
    # A training manifest moved away after training: the hours are not guessed.
    gone = train_config(tmp_path / "moved.csv")
    torch.save(training_checkpoint(model, train_config=gone), tmp_path / "moved.pt")
    for name in ("bare", "moved"):
        assert cli.main(["export", str(tmp_path / f"{name}.pt"), str(tmp_path / name)]) == 0
    assert f"records no training run: {NOT_RECORDED}" in read_card(tmp_path / "bare")[1]
    moved = read_card(tmp_path / "moved")[1]
    assert f"| training audio | {NOT_RECORDED} (`{tmp_path / 'moved.csv'}`" in moved
    assert "| steps | 400 planned" in moved


def test_to_dict_of_a_real_config_is_what_the_card_reads(tmp_path: Path):
    """The keys the card reads exist in a resolved TrainConfig (not only in these tests)."""
    corpus = make_corpus(tmp_path / "corpus", [1.0])
    cfg = load_train_config(write_config(tmp_path / "t.toml", corpus, tmp_path / "run"))
    data = to_dict(cfg)
    assert {"train_manifest", "batch_seconds", "num_units"} <= set(data["data"])
    assert {"lr", "schedule", "max_steps"} <= set(data["optim"])
    assert {"kind", "preset", "from_pretrained"} <= set(data["model"])
