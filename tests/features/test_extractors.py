"""The extractor factory, the checks on computed features, and feature fingerprints."""

from __future__ import annotations

import numpy as np
import pytest

from hubertlab.data.manifest import ManifestRow
from hubertlab.features.extractors import build_extractor, extract_checked
from hubertlab.features.mfcc import MfccExtractor
from hubertlab.fingerprint import settings_fingerprint


def test_build_extractor_kinds_and_errors(tmp_path):
    assert isinstance(build_extractor("mfcc"), MfccExtractor)
    with pytest.raises(ValueError, match="go with kind 'layer'"):
        build_extractor("mfcc", layer=3)
    with pytest.raises(ValueError, match="needs a checkpoint and a layer"):
        build_extractor("layer", tmp_path / "model")
    with pytest.raises(ValueError, match="kind must be one of"):
        build_extractor("fbank")
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        build_extractor("layer", tmp_path / "model", 1)


def test_extract_checked_names_manifest_and_fileid():
    row = ManifestRow("spk/a", "spk/a.wav", 16000)
    wav = np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    assert extract_checked(MfccExtractor(), row, wav, "m.csv").shape == (98, 39)
    with pytest.raises(ValueError, match="m.csv: spk/a: audio has 15999 samples"):
        extract_checked(MfccExtractor(), row, wav[:-1], "m.csv")
    with pytest.raises(ValueError, match="m.csv: spk/a: features contain .* NaN or infinite"):
        extract_checked(MfccExtractor(), row, wav * np.float32(1e30), "m.csv")


def test_layer_fingerprint_follows_the_weights_not_the_head(tmp_path):
    import torch

    from hubertlab.features.hidden import LayerExtractor, weights_fingerprint
    from hubertlab.models.checkpoint import save_pretrained
    from hubertlab.models.config import HubertConfig
    from hubertlab.models.hubert import HubertModel

    torch.manual_seed(0)
    model = HubertModel(HubertConfig.preset("tiny"))
    save_pretrained(model, tmp_path / "ckpt")
    from_object = LayerExtractor(model, 1).settings()["fingerprint"]
    from_checkpoint = build_extractor("layer", tmp_path / "ckpt", 2).settings()
    # the checkpoint is read without its head and with a fresh mask embedding: same weights
    assert from_checkpoint["fingerprint"] == from_object
    assert len(from_object) == 64
    with torch.no_grad():
        for p in model.final_proj.parameters():
            p.add_(1.0)
        model.mask_embedding.add_(1.0)
    assert LayerExtractor(model, 1).settings()["fingerprint"] == from_object
    # module names do not matter (a refactor or a wrapper keeps the fingerprint)
    wrapper = torch.nn.Module()
    wrapper.inner, wrapper.cfg = model.backbone, model.backbone.cfg
    assert weights_fingerprint(wrapper) == from_object
    with torch.no_grad():
        model.backbone.encoder.layers[0].parameters().__next__().view(-1)[0] += 1e-3
    assert LayerExtractor(model, 1).settings()["fingerprint"] != from_object


def test_mfcc_settings_are_recorded_and_fingerprinted():
    settings = MfccExtractor().settings()
    assert settings["mfcc"]["num_mel_bins"] == 23 and settings["mfcc"]["cepstral_lifter"] == 22
    assert settings["fingerprint"] == MfccExtractor().settings()["fingerprint"]
    changed = {**settings["mfcc"], "num_mel_bins": 40}
    assert settings_fingerprint(changed) != settings["fingerprint"]
    assert settings_fingerprint(settings["mfcc"]) == settings["fingerprint"]


def test_cmvn_extractor_normalises_each_utterance_and_says_so():
    extractor = build_extractor("mfcc", cmvn=True)
    wav = np.random.default_rng(1).standard_normal(16000).astype(np.float32)
    loud = extractor(wav * np.float32(8))
    frames = extractor(wav)
    assert frames.shape == (extractor.num_frames(16000), 39) and extractor.dim == 39
    np.testing.assert_allclose(frames.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(frames.std(0), 1, atol=1e-3)
    # a gain is a cepstral offset: gone after the mean is removed
    np.testing.assert_allclose(loud, frames, atol=1e-3)
    raw = MfccExtractor()(wav)
    assert not np.allclose(frames, raw)
    settings = extractor.settings()
    assert settings["cmvn"] is True
    assert {k: v for k, v in settings.items() if k != "cmvn"} == MfccExtractor().settings()
