"""Units without k-means: the argmax of a SpidR/DinoSR codebook head, frame by frame.

A head predicts which codeword of its teacher layer's codebook a frame belongs to; its argmax
is a unit sequence at 50 Hz (spidr's get_codebooks). Long files run in chunks with context,
exactly as layer features do (features.hidden.LayerExtractor), on per-utterance standardised
audio. The output files are those `hubertlab transcribe` writes with k-means.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from hubertlab.constants import LABEL_RATE_HZ
from hubertlab.data.manifest import Manifest, read_manifest
from hubertlab.features.hidden import LayerExtractor
from hubertlab.fileio import atomic_open, atomic_write_json, atomic_write_text
from hubertlab.models.spidr import DistillModel

log = logging.getLogger(__name__)


class CodebookExtractor(LayerExtractor):
    """Codeword probabilities (frames, codebook_size) of the head at layer `layer` (1-based;
    SpidR's heads sit at its last num_codebooks layers)."""

    def __init__(
        self,
        model: DistillModel | str | Path,
        layer: int,
        *,
        device: str | None = None,
        chunk_seconds: float = 30.0,
        context_seconds: float = 2.0,
    ) -> None:
        if not isinstance(model, torch.nn.Module):
            from hubertlab.models.checkpoint import from_pretrained

            if not Path(model).exists():
                raise FileNotFoundError(f"checkpoint not found: {model}")
            model = from_pretrained(model)
        if not isinstance(model, DistillModel):
            raise ValueError("codebook units need a SpidR or DinoSR model")
        heads = list(model.cfg.target_layers)
        if layer not in heads:
            raise ValueError(f"layer {layer} has no codebook head (heads at layers {heads})")
        super().__init__(
            model,
            layer,
            device=device,
            chunk_seconds=chunk_seconds,
            context_seconds=context_seconds,
        )
        self.distill = model.to(self.device).eval()
        self.dim = model.cfg.codebook_size

    def settings(self) -> dict:
        return {**super().settings(), "kind": "codebook", "dim": self.dim}

    @torch.inference_mode()
    def _run(self, wav: torch.Tensor) -> torch.Tensor:
        probs, _ = self.distill.codebook_predictions(wav[None])
        return probs[self.layer - 1][0]  # (frames, codebook_size)


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
    from hubertlab.units.assign import DICT_NAME, KM_NAME, META_NAME, UNITS_NAME

    if not isinstance(manifest, Manifest):
        manifest = read_manifest(manifest)
    extractor = CodebookExtractor(checkpoint, layer, device=device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    units = []
    for i in range(len(manifest)):
        probs = extractor(manifest.read_audio(i))
        units.append(np.asarray(probs.argmax(1), dtype=np.int64))
    with atomic_open(out / UNITS_NAME, "w", encoding="utf-8") as f:
        for row, u in zip(manifest, units, strict=True):
            f.write(json.dumps({"fileid": row.fileid, "units": u.tolist()}) + "\n")
    with atomic_open(out / KM_NAME, "w", encoding="utf-8") as f:
        f.writelines(" ".join(map(str, u.tolist())) + "\n" for u in units)
    atomic_write_text(out / DICT_NAME, "".join(f"{i} 1\n" for i in range(extractor.dim)))
    meta = {
        "k": extractor.dim,
        "label_rate_hz": LABEL_RATE_HZ,
        "feature": extractor.settings(),
        "kmeans": None,
        "manifest": manifest.source,
        "num_shards": 1,
        "num_utterances": len(units),
    }
    atomic_write_json(out / META_NAME, meta)
    log.info("%s: codebook units of %d utterances (layer %d)", out, len(units), layer)
    return out / UNITS_NAME
