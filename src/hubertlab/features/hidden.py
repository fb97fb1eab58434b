"""Layer features: the output of transformer layer L of one of our models (HuBERT, SpidR,
DinoSR), at 50 Hz, computed in chunks (hubertlab.features.chunked). Other transformers
families have their own extractor (features/transformers_layers.py); the factory
(features/extractors.py) chooses.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import torch

from hubertlab.constants import LABEL_RATE_HZ, num_frames
from hubertlab.data.audio import standardize_waveform
from hubertlab.features.chunked import chunk_options, extract_in_chunks
from hubertlab.models.checkpoint import from_pretrained
from hubertlab.models.hubert import HEAD_PREFIXES
from hubertlab.models.spidr import intermediate_outputs


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 of what shapes a model's layer features: the bytes, dtype and shape of every
    backbone tensor, and whether the waveform is standardised. Tensors are hashed one by one
    and their digests sorted, so renaming or reordering modules (a refactor, a converted
    checkpoint) keeps the fingerprint. The head and the mask embedding are left out (unused
    here; a checkpoint may lack or re-initialise them): a model and its checkpoint agree."""
    skipped = {prefix.strip(".") for prefix in HEAD_PREFIXES} | {"mask_embedding"}
    digests = []
    for name, tensor in model.state_dict().items():
        if skipped & set(name.split(".")):
            continue
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest = hashlib.sha256(f"{flat.dtype} {tuple(tensor.shape)}\n".encode())
        digest.update(flat.view(torch.uint8).numpy())
        digests.append(digest.hexdigest())
    total = hashlib.sha256(f"normalize_waveform={model.cfg.normalize_waveform}\n".encode())
    for digest in sorted(digests):
        total.update(digest.encode())
    return total.hexdigest()


class LayerExtractor:
    """Feature-store extractor for layer `layer` of a model (or any checkpoint
    `hubertlab.models.checkpoint.from_pretrained` reads). With `intermediate` (SpidR/DinoSR
    only), the layer's intermediate output (feed-forward output before the residual add, the
    spidr package's definition; what `abx --intermediate` scores) instead of its hidden state."""

    frame_rate_hz = LABEL_RATE_HZ

    def __init__(
        self,
        model: torch.nn.Module | str | Path,
        layer: int,
        *,
        device: str | None = None,
        dtype: str = "float32",
        chunk_seconds: float = 30.0,
        context_seconds: float = 2.0,
        intermediate: bool = False,
    ) -> None:
        self.chunk_frames, self.context_frames = chunk_options(
            dtype, chunk_seconds, context_seconds
        )
        self.checkpoint = None if isinstance(model, torch.nn.Module) else str(model)
        if self.checkpoint is not None:
            if not Path(self.checkpoint).exists():
                raise FileNotFoundError(f"checkpoint not found: {self.checkpoint}")
            model = from_pretrained(self.checkpoint, keep_head=False)
        if intermediate and not hasattr(model, "intermediate_outputs"):
            raise ValueError(
                f"{self.checkpoint or 'model'}: intermediate outputs need a SpidR/DinoSR model"
            )
        backbone = getattr(model, "backbone", model)  # a whole model, or its Backbone
        num_layers = backbone.cfg.num_layers
        if not 1 <= layer <= num_layers:
            raise ValueError(f"layer must be in [1, {num_layers}] for this model, got {layer}")
        # A shallow copy shares the weights; the waveform is standardised here, over the whole
        # file, so per-chunk standardisation inside the model is switched off on the copy.
        self.fingerprint = weights_fingerprint(backbone)
        self.standardize = bool(backbone.cfg.normalize_waveform) or getattr(
            model, "expects_standardized_audio", False
        )
        self.model = copy.copy(backbone)
        self.model.cfg = dataclasses.replace(backbone.cfg, normalize_waveform=False)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device).eval()
        self.layer = layer
        self.dim = backbone.cfg.hidden_dim
        self.dtype = dtype
        self.intermediate = intermediate

    def settings(self) -> dict:
        settings = {
            "kind": "layer", "layer": self.layer, "checkpoint": self.checkpoint,
            "dim": self.dim, "frame_rate_hz": self.frame_rate_hz, "fingerprint": self.fingerprint,
        }  # fmt: skip
        # Only when set: stores and k-means written before the option keep their settings.
        return {**settings, "intermediate": True} if self.intermediate else settings

    def num_frames(self, num_samples: int) -> int:
        return num_frames(num_samples)

    @torch.inference_mode()
    def _run(self, wav: torch.Tensor) -> torch.Tensor:
        with torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.dtype == "bfloat16"
        ):
            if self.intermediate:
                outputs, _ = intermediate_outputs(self.model, wav[None])
                return outputs[self.layer - 1][0].float()  # (frames, dim)
            hidden, _ = self.model.extract_features(wav[None], output_layer=self.layer)
        return hidden[self.layer][0].float()  # (frames, dim)

    def __call__(self, wav: np.ndarray) -> np.ndarray:
        """(num_samples,) float32 waveform -> (num_frames(num_samples), dim) float32."""
        total = num_frames(len(wav))
        if total == 0:
            return np.zeros((0, self.dim), np.float32)
        if self.standardize:
            wav = standardize_waveform(wav)
        wav_t = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)).to(self.device)
        return extract_in_chunks(
            wav_t, self._run, self.dim, self.chunk_frames, self.context_frames,
            take_tail=False, where=self.checkpoint or "model",
        )  # fmt: skip
