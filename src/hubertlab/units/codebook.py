"""Units without k-means: the argmax of a SpidR/DinoSR codebook head, frame by frame.

A head predicts which codeword of its teacher layer's codebook a frame belongs to; its argmax
is a unit sequence at 50 Hz (spidr's get_codebooks). Long files run in chunks with context,
exactly as layer features do (features.hidden.LayerExtractor), on per-utterance standardised
audio. The output files are those `hubertlab transcribe` writes with k-means.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from hubertlab.constants import LABEL_RATE_HZ
from hubertlab.data.manifest import Manifest, read_manifest
from hubertlab.features.hidden import LayerExtractor
from hubertlab.fileio import atomic_open, atomic_write_json, atomic_write_text
from hubertlab.models.checkpoint import from_pretrained
from hubertlab.models.spidr import DistillModel
from hubertlab.units.assign import DICT_NAME, KM_NAME, META_NAME, UNITS_NAME

log = logging.getLogger(__name__)


class CodebookExtractor(LayerExtractor):
    """Codeword probabilities (frames, codebook_size) of the head at layer `layer` (1-based;
    SpidR's heads sit at its last num_codebooks layers). Given several layers, their heads'
    probabilities side by side, (frames, len(layers) * codebook_size), from one forward."""

    def __init__(
        self,
        model: DistillModel | str | Path,
        layer: int | Sequence[int],
        *,
        device: str | None = None,
        chunk_seconds: float = 30.0,
        context_seconds: float = 2.0,
    ) -> None:
        if not isinstance(model, torch.nn.Module):
            if not Path(model).exists():
                raise FileNotFoundError(f"checkpoint not found: {model}")
            model = from_pretrained(model)
        if not isinstance(model, DistillModel):
            raise ValueError("codebook units need a SpidR or DinoSR model")
        self.layers = (layer,) if isinstance(layer, int) else tuple(layer)
        heads = list(model.cfg.target_layers)
        for wanted in self.layers:
            if wanted not in heads:
                raise ValueError(f"layer {wanted} has no codebook head (heads at layers {heads})")
        super().__init__(
            model,
            self.layers[0],
            device=device,
            chunk_seconds=chunk_seconds,
            context_seconds=context_seconds,
        )
        self.distill = model.to(self.device).eval()
        self.codebook_size = model.cfg.codebook_size
        self.dim = self.codebook_size * len(self.layers)

    def settings(self) -> dict:
        settings = {**super().settings(), "kind": "codebook", "dim": self.dim}
        return settings if len(self.layers) == 1 else {**settings, "layers": list(self.layers)}

    @torch.inference_mode()
    def _run(self, wav: torch.Tensor) -> torch.Tensor:
        probs, _ = self.distill.codebook_predictions(wav[None])
        return torch.cat([probs[layer - 1][0] for layer in self.layers], 1)  # (frames, dim)


def transcribe_codebook(
    manifest: Manifest | str | Path,
    checkpoint: DistillModel | str | Path,
    layer: int,
    out_dir: str | Path,
    *,
    device: str | None = None,
) -> Path:
    """Write units.jsonl, units.km, dict.km.txt and units.json (as `hubertlab transcribe`) with
    the codebook-head argmax of `layer` for every row of `manifest`; returns units.jsonl."""
    return transcribe_codebooks(manifest, checkpoint, {layer: out_dir}, device=device)[layer]


def transcribe_codebooks(
    manifest: Manifest | str | Path,
    checkpoint: DistillModel | str | Path,
    out_dirs: Mapping[int, str | Path],
    *,
    device: str | None = None,
) -> dict[int, Path]:
    """transcribe_codebook of several heads (layer -> output folder) in one pass over the
    audio; returns each layer's units.jsonl."""
    if not isinstance(manifest, Manifest):
        manifest = read_manifest(manifest)
    extractor = CodebookExtractor(checkpoint, list(out_dirs), device=device)
    size = extractor.codebook_size
    units: list[list[np.ndarray]] = [[] for _ in out_dirs]
    for i in range(len(manifest)):
        probs = np.asarray(extractor(manifest.read_audio(i)))  # (frames, heads * size)
        for head, per_head in enumerate(units):
            per_head.append(probs[:, head * size : (head + 1) * size].argmax(1).astype(np.int64))
    settings = {**extractor.settings(), "dim": size}
    settings.pop("layers", None)
    paths = {}
    for (layer, out_dir), per_head in zip(out_dirs.items(), units, strict=True):
        paths[layer] = _write_units(
            Path(out_dir), manifest, per_head, {**settings, "layer": layer}, size
        )
        log.info("%s: codebook units of %d utterances (layer %d)", out_dir, len(per_head), layer)
    return paths


def _write_units(
    out: Path, manifest: Manifest, units: list[np.ndarray], settings: dict, size: int
) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    with atomic_open(out / UNITS_NAME, "w", encoding="utf-8") as f:
        for row, u in zip(manifest, units, strict=True):
            f.write(json.dumps({"fileid": row.fileid, "units": u.tolist()}) + "\n")
    with atomic_open(out / KM_NAME, "w", encoding="utf-8") as f:
        f.writelines(" ".join(map(str, u.tolist())) + "\n" for u in units)
    atomic_write_text(out / DICT_NAME, "".join(f"{i} 1\n" for i in range(size)))
    meta = {
        "k": size,
        "label_rate_hz": LABEL_RATE_HZ,
        "feature": settings,
        "kmeans": None,
        "manifest": manifest.source,
        "num_shards": 1,
        "num_utterances": len(units),
    }
    atomic_write_json(out / META_NAME, meta)
    return out / UNITS_NAME
