"""SpidR/DinoSR interop: the spidr package's file layout in, export --to spidr out (loaded there
with the same outputs), features, ABX and codebook units from SpidR checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hubertlab.cli import main
from hubertlab.models.checkpoint import from_pretrained, save_pretrained
from hubertlab.models.spidr import DistillModel
from hubertlab.models.spidr_config import DistillConfig
from hubertlab.models.spidr_io import spidr_config_dict

SMALL = dict(
    hidden_dim=64,
    num_heads=4,
    ffn_dim=128,
    num_layers=3,
    conv_channels=(32,) * 7,
    num_codebooks=2,
    codebook_size=16,
    pos_conv_kernel=5,
    pos_conv_groups=4,
    pos_conv_layers=2,
)


def small_model(kind: str = "spidr", seed: int = 0) -> DistillModel:
    torch.manual_seed(seed)
    return DistillModel(DistillConfig.preset(kind, "base", **SMALL)).eval()


@pytest.fixture(scope="module")
def demo_corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("spidr_interop") / "corpus"
    assert main(["demo-corpus", str(out), "--minutes", "0.5", "--seed", "3", "--workers", "1"]) == 0
    return out


@pytest.fixture(scope="module")
def spidr_dir(tmp_path_factory) -> Path:
    return save_pretrained(small_model(), tmp_path_factory.mktemp("spidr_interop") / "model")


@pytest.mark.parametrize("kind", ["spidr", "dinosr"])
def test_export_to_spidr_loads_in_the_package_with_the_same_outputs(kind, tmp_path):
    spidr_models = pytest.importorskip("spidr.models")
    model = small_model(kind)
    folder = save_pretrained(model, tmp_path / "ours")
    assert json.loads((folder / "config.json").read_text())["model_kind"] == kind
    assert main(["export", str(folder), str(tmp_path / "out" / "m.pt"), "--to", "spidr"]) == 0
    theirs = spidr_models.build_model(model_type=kind, checkpoint=tmp_path / "out" / "m.pt").eval()
    wav = torch.randn(1, 12000)
    with torch.no_grad():
        expected, _ = model.intermediate_outputs(wav)
        for a, b in zip(theirs.get_intermediate_outputs(wav), expected, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_released_layout_loads_with_module_prefix_and_kind_from_the_name(tmp_path):
    """Their file: {"model": state dict} (here DDP-prefixed), config.json beside it."""
    spidr_models = pytest.importorskip("spidr.models")
    spidr_config = pytest.importorskip("spidr.config")
    ours_cfg = DistillConfig.preset("dinosr", "base", **SMALL)
    fields = spidr_config_dict(ours_cfg)
    theirs = spidr_models.DinoSR(spidr_config.DinoSRConfig(**fields)).eval()
    state = {f"module.{k}": v for k, v in theirs.state_dict().items()}
    torch.save({"model": state, "optimizer": {}}, tmp_path / "dinosr_base_reproduced.pt")
    (tmp_path / "config.json").write_text(json.dumps({"model": fields}))
    model = from_pretrained(tmp_path / "dinosr_base_reproduced.pt").eval()
    assert isinstance(model, DistillModel) and model.cfg.kind == "dinosr"
    assert model.cfg == ours_cfg
    wav = torch.randn(2, 8000)
    with torch.no_grad():
        preds, _ = model.codebook_predictions(wav)
        for a, b in zip(theirs.get_codebooks(wav), preds, strict=True):
            assert (a is None) == (b is None)
            if a is not None:
                torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


def test_our_training_checkpoint_and_folder_load(spidr_dir, tmp_path, monkeypatch):
    model = from_pretrained(spidr_dir)
    assert isinstance(model, DistillModel)
    model_config = json.loads((spidr_dir / "config.json").read_text())["model_config"]
    state = {"model": model.state_dict(), "model_config": model_config, "model_kind": "spidr"}
    torch.save(state, tmp_path / "step_1.pt")
    reads, real_load = [], torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: reads.append(a[0]) or real_load(*a, **k))
    again = from_pretrained(tmp_path / "step_1.pt")
    assert len(reads) == 1  # the kind test and the reader share one read
    for key, value in model.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key


def test_features_abx_and_codebook_units_from_a_spidr_checkpoint(
    demo_corpus, spidr_dir, tmp_path, capsys
):
    manifest, item = str(demo_corpus / "manifest.csv"), str(demo_corpus / "abx.item")
    store = tmp_path / "feats"
    argv = ["features", manifest, str(store), "--kind", "layer", "--checkpoint", str(spidr_dir)]
    assert main([*argv, "--layer", "2", "--dtype", "float32"]) == 0
    assert main(["abx", item, "--manifest", manifest, "--checkpoint", str(spidr_dir),
                 "--layers", "2", "--out", str(tmp_path / "abx")]) == 0  # fmt: skip
    score = json.loads((tmp_path / "abx" / "abx.json").read_text())["scores"][0]
    assert score["layer"] == 2 and score["within"]["num_triplets"] > 0

    out = tmp_path / "units"
    assert main(["transcribe", manifest, str(out), "--checkpoint", str(spidr_dir),
                 "--codebook-layer", "3"]) == 0  # fmt: skip
    rows = [json.loads(x) for x in (out / "units.jsonl").read_text().splitlines()]
    model = from_pretrained(spidr_dir).eval()
    from hubertlab.data.manifest import read_manifest

    m = read_manifest(manifest)
    wav = torch.from_numpy(m.read_audio(0, standardize=True))[None]
    with torch.no_grad():
        probs, _ = model.codebook_predictions(wav)
    assert rows[0]["fileid"] == m[0].fileid
    assert np.array_equal(np.array(rows[0]["units"]), probs[2][0].argmax(-1).numpy())
    # Several heads in one pass: each head's files as its own transcription writes them.
    from hubertlab.units.codebook import transcribe_codebooks

    last = model.cfg.backbone.num_layers
    paths = transcribe_codebooks(m, model, {last: tmp_path / "last", 3: tmp_path / "three"})
    assert paths[3].read_bytes() == (out / "units.jsonl").read_bytes()
    assert (paths[3].parent / "units.json").read_text() == (out / "units.json").read_text()
    first = json.loads(paths[last].read_text().splitlines()[0])["units"]
    assert np.array_equal(np.array(first), probs[last - 1][0].argmax(-1).numpy())
    assert main(["transcribe", manifest, str(out), "--checkpoint", str(spidr_dir),
                 "--codebook-layer", "1"]) != 0  # fmt: skip
    assert "no codebook head" in capsys.readouterr().err


def test_abx_of_intermediate_outputs_scores_what_the_model_gives(demo_corpus, spidr_dir):
    from hubertlab.data.manifest import read_manifest
    from hubertlab.evaluate.abx import AbxConfig, abx_scores
    from hubertlab.evaluate.abx_sweep import abx_per_layer

    model = from_pretrained(spidr_dir).eval()
    manifest = read_manifest(demo_corpus / "manifest.csv")
    item = demo_corpus / "abx.item"
    config = AbxConfig(frame_shift_s=0.02)
    scores = abx_per_layer(model, manifest, item, layers=[2], config=config, intermediate=True)
    with torch.inference_mode():
        features = {
            row.fileid: model.intermediate_outputs(
                torch.from_numpy(manifest.read_audio(i, standardize=True))[None]
            )[0][1][0].numpy()
            for i, row in enumerate(manifest)
        }
    assert scores[0].results == abx_scores(features, item, config)
