"""`hubertlab features --kind layer --intermediate`: a SpidR/DinoSR layer's output before the
residual add (the spidr package's intermediate output), written as any layer feature."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from hubertlab.cli import main
from hubertlab.constants import SAMPLE_RATE
from hubertlab.data.audio import standardize_waveform
from hubertlab.data.manifest import ManifestRow, write_manifest
from hubertlab.features.store import FeatureStore
from hubertlab.models.checkpoint import save_pretrained
from hubertlab.models.config import HubertConfig
from hubertlab.models.hubert import HubertModel
from hubertlab.models.spidr import DistillModel
from hubertlab.models.spidr_config import DistillConfig

SMALL = dict(conv_channels=(16,) * 7, hidden_dim=32, num_layers=2, num_heads=2, ffn_dim=64)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("intermediate")
    rng = np.random.default_rng(0)
    rows = []
    for i, seconds in enumerate((0.7, 1.3)):
        wav = (0.1 * rng.standard_normal(int(seconds * SAMPLE_RATE)) + 0.05).astype(np.float32)
        sf.write(root / f"u{i}.wav", wav, SAMPLE_RATE)
        rows.append(ManifestRow(f"u{i}", f"u{i}.wav", len(wav)))
    write_manifest(rows, root / "manifest.csv")
    torch.manual_seed(0)
    model = DistillModel(DistillConfig.preset("spidr", "tiny", num_codebooks=2, **SMALL)).eval()
    save_pretrained(model, root / "spidr")
    save_pretrained(HubertModel(HubertConfig.preset("tiny", **SMALL)), root / "hubert")
    return root, model


def _features(root, name: str, *extra: str) -> FeatureStore:
    args = ["features", str(root / "manifest.csv"), str(root / name), "--kind", "layer"]
    args += ["--checkpoint", str(root / "spidr"), "--layer", "1", "--dtype", "float32"]
    assert main([*args, "--device", "cpu", *extra]) == 0
    return FeatureStore.open(root / name)


def test_intermediate_outputs_of_a_spidr_checkpoint(corpus):
    root, model = corpus
    intermediate = _features(root, "ffn", "--intermediate")
    hidden = _features(root, "hidden")
    assert intermediate.meta["extractor"]["intermediate"] is True
    assert "intermediate" not in hidden.meta["extractor"]
    for fileid in ("u0", "u1"):
        wav, _ = sf.read(root / f"{fileid}.wav", dtype="float32")
        wav = torch.from_numpy(standardize_waveform(wav))[None]
        with torch.no_grad():
            ffns, _ = model.intermediate_outputs(wav)
            layers, _ = model.backbone.extract_features(wav)
        np.testing.assert_allclose(
            intermediate.read_frames(fileid), ffns[0][0].numpy(), atol=1e-4, rtol=1e-4
        )
        np.testing.assert_allclose(
            hidden.read_frames(fileid), layers[1][0].numpy(), atol=1e-4, rtol=1e-4
        )
        assert not np.allclose(intermediate.read_frames(fileid), hidden.read_frames(fileid))


def test_intermediate_outputs_need_a_spidr_model(corpus, capsys):
    root, _ = corpus
    args = ["features", str(root / "manifest.csv"), str(root / "bad"), "--kind", "layer"]
    args += ["--checkpoint", str(root / "hubert"), "--layer", "1", "--intermediate"]
    assert main(args) != 0
    assert "intermediate outputs need a SpidR/DinoSR model" in capsys.readouterr().err
    with pytest.raises(ValueError, match="go with kind 'layer'"):
        from hubertlab.features.extractors import build_extractor

        build_extractor("mfcc", intermediate=True)


def test_units_of_one_output_refuse_a_kmeans_of_the_other(corpus, capsys):
    """Hidden states and intermediate outputs of a layer share the weights' fingerprint: the
    flag itself must keep a k-means fitted on one from labelling the other."""
    root, _ = corpus
    _features(root, "ffn_for_kmeans", "--intermediate")
    kmeans = root / "kmeans_ffn"
    assert main(["kmeans", str(root / "ffn_for_kmeans"), str(kmeans), "--k", "3",
                 "--fraction", "1.0", "--device", "cpu"]) == 0  # fmt: skip
    argv = ["transcribe", str(root / "manifest.csv"), str(kmeans), str(root / "units")]
    argv += ["--kind", "layer", "--checkpoint", str(root / "spidr"), "--layer", "1"]
    assert main([*argv, "--device", "cpu"]) == 1
    assert "intermediate output of layer 1" in capsys.readouterr().err
    assert main([*argv, "--device", "cpu", "--intermediate"]) == 0
