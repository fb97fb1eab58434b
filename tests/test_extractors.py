"""The extractor factory, the checks on computed features, and feature fingerprints."""

from __future__ import annotations

import numpy as np
import pytest

from hubertlab.data.manifest import ManifestRow
from hubertlab.features.extractors import build_extractor, extract_checked
from hubertlab.features.mfcc import MfccExtractor


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
