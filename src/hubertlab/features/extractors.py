"""Feature extractors: the one factory (`build_extractor`) the CLI and the pipeline use, which
alone chooses the extractor class, and the checks every computed feature passes (frame
count, shape, finite values)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from hubertlab.data.manifest import ManifestRow
from hubertlab.features.cmvn import CmvnExtractor
from hubertlab.features.hidden import LayerExtractor
from hubertlab.features.mfcc import MfccExtractor
from hubertlab.features.transformers_layers import (
    TransformersLayerExtractor,
    is_other_transformers_model,
)

KINDS = ("mfcc", "layer")


class FeatureExtractor(Protocol):
    """What the store and transcription need from a feature computer (MFCC, layer L...)."""

    dim: int
    frame_rate_hz: int

    def settings(self) -> dict:
        """JSON-able description (kind, layer, checkpoint, fingerprint...) saved in store.json
        and with k-means fitted on the store."""

    def num_frames(self, num_samples: int) -> int:
        """Frames this extractor yields for a waveform of `num_samples` samples."""

    def __call__(self, wav: np.ndarray) -> np.ndarray:
        """(num_samples,) float32 waveform -> (frames, dim) features."""


def describe(settings: dict, *, with_fingerprint: bool = True) -> str:
    """'layer 6 of ckpt/ (fingerprint 1a2b3c4d5e6f)' or 'mfcc (...)', for error messages."""
    text = settings.get("kind", "unknown")
    if text == "layer":
        text = f"layer {settings.get('layer')} of {settings.get('checkpoint') or 'a model object'}"
        if settings.get("intermediate"):
            text = "intermediate output of " + text
    if settings.get("cmvn"):
        text += " with per-utterance CMVN"
    fingerprint = settings.get("fingerprint")
    if with_fingerprint:
        text += f" (fingerprint {fingerprint[:12] if fingerprint else 'not recorded'})"
    return text


def build_extractor(
    kind: str,
    checkpoint: str | Path | None = None,
    layer: int | None = None,
    *,
    device: str | None = None,
    dtype: str = "float32",
    chunk_seconds: float = 30.0,
    context_seconds: float = 2.0,
    intermediate: bool = False,
    cmvn: bool = False,
) -> FeatureExtractor:
    """MfccExtractor for kind "mfcc"; for kind "layer", the extractor of layer `layer` of
    `checkpoint` (`device`, `dtype`, `chunk_seconds`, `context_seconds` and `intermediate`,
    SpidR/DinoSR's outputs before the residual, go to it): LayerExtractor for our models and
    HuBERT folders, TransformersLayerExtractor for other transformers families (WavLM,
    wav2vec 2.0, data2vec audio), read by transformers' own classes. With `cmvn`, each
    utterance's features are normalised on their own (CmvnExtractor)."""
    options = {"device": device, "dtype": dtype, "chunk_seconds": chunk_seconds}
    options["context_seconds"] = context_seconds
    extractor = _build(kind, checkpoint, layer, intermediate, options)
    return CmvnExtractor(extractor) if cmvn else extractor


def _build(
    kind: str, checkpoint: str | Path | None, layer: int | None, intermediate: bool, options: dict
) -> FeatureExtractor:
    if kind == "mfcc":
        if checkpoint is not None or layer is not None or intermediate:
            raise ValueError("checkpoint, layer and intermediate go with kind 'layer', not 'mfcc'")
        return MfccExtractor()
    if kind != "layer":
        raise ValueError(f"feature kind must be one of {KINDS}, got {kind!r}")
    if checkpoint is None or layer is None:
        raise ValueError("kind 'layer' needs a checkpoint and a layer")
    if is_other_transformers_model(checkpoint):
        if intermediate:
            raise ValueError(f"{checkpoint}: intermediate outputs need a SpidR/DinoSR model")
        return TransformersLayerExtractor(checkpoint, layer, **options)
    return LayerExtractor(checkpoint, layer, **options, intermediate=intermediate)


def require_finite(features: np.ndarray, where: str) -> None:
    """ValueError naming `where` (file and fileid) when features hold NaN or infinity: a NaN
    frame is nearest to no centroid and silently becomes unit 0."""
    finite = np.isfinite(features)
    if not finite.all():
        bad = int(finite.size - np.count_nonzero(finite))
        raise ValueError(
            f"{where}: features contain {bad} NaN or infinite values (audio of huge amplitude, "
            "or a model with NaN weights?)"
        )


def extract_checked(
    extractor: FeatureExtractor, row: ManifestRow, wav: np.ndarray, source: str
) -> np.ndarray:
    """extractor(wav) for one manifest row, checked: sample count, frame count, dim, finite.
    Errors name `source` (the manifest) and the fileid."""
    if wav.shape[0] != row.num_samples:
        raise ValueError(
            f"{source}: {row.fileid}: audio has {wav.shape[0]} samples, manifest says "
            f"{row.num_samples}; rebuild the manifest"
        )
    feats = np.asarray(extractor(wav))
    expected = extractor.num_frames(row.num_samples)
    if feats.ndim != 2 or feats.shape != (expected, extractor.dim):
        raise ValueError(
            f"{source}: {row.fileid}: extractor returned shape {feats.shape}, "
            f"expected ({expected}, {extractor.dim})"
        )
    require_finite(feats, f"{source}: {row.fileid}")
    return feats
