"""Layer features: the output of transformer layer L of a HuBERT model, at 50 Hz.

Long files run in chunks whose borders sit on multiples of the 320-sample hop, so chunk
frame j is exactly frame (start + j) of the whole file; each chunk gets `context_seconds` of
extra audio on both sides whose frames are dropped, so the attention context at a border is
(nearly) what the whole file would give. The frame count is always num_frames(num_samples).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from hubertlab.constants import FRAME_HOP, LABEL_RATE_HZ, RECEPTIVE_FIELD, num_frames
from hubertlab.data.audio import standardize_waveform


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 of what shapes a model's layer features: the bytes, dtype and shape of every
    backbone tensor, and whether the waveform is standardised. Tensors are hashed one by one
    and their digests sorted, so renaming or reordering modules (a refactor, a converted
    checkpoint) keeps the fingerprint. The head and the mask embedding are left out (unused
    here; a checkpoint may lack or re-initialise them): a model and its checkpoint agree."""
    from hubertlab.models.checkpoint import HEAD_PREFIXES

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


def chunk_options(dtype: str, chunk_seconds: float, context_seconds: float) -> tuple[int, int]:
    """Check a layer extractor's options; (frames per chunk, frames of context each side)."""
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
    if chunk_seconds <= 0 or context_seconds < 0:
        raise ValueError(
            f"need chunk_seconds > 0 and context_seconds >= 0, got {chunk_seconds}, "
            f"{context_seconds}"
        )
    return max(1, round(chunk_seconds * LABEL_RATE_HZ)), round(context_seconds * LABEL_RATE_HZ)


def chunks(total: int, chunk_frames: int, context_frames: int) -> Iterator[tuple[int, ...]]:
    """(first, last, lo, hi) for each chunk of a file of `total` frames: output frames
    [first, last) are computed from input frames [lo, hi), context included on both sides."""
    for first in range(0, total, chunk_frames):
        last = min(first + chunk_frames, total)
        yield first, last, max(0, first - context_frames), min(total, last + context_frames)


class LayerExtractor:
    """Feature-store extractor for layer `layer` of a model (or any checkpoint
    `hubertlab.models.checkpoint.from_pretrained` reads). With `intermediate` (SpidR/DinoSR
    only), the layer's intermediate output (feed-forward output before the residual add, the
    spidr package's definition; what `abx --intermediate` scores) instead of its hidden state."""

    frame_rate_hz = LABEL_RATE_HZ

    def __new__(cls, model: torch.nn.Module | str | Path, *args, **kwargs):
        # Transformers folders of other families (WavLM, wav2vec 2.0, data2vec audio) are read
        # by transformers' own classes: an extractor with the same interface.
        from hubertlab.features import transformers_layers as other

        if not isinstance(model, torch.nn.Module) and other.is_other_transformers_model(model):
            if kwargs.pop("intermediate", False):
                raise ValueError(f"{model}: intermediate outputs need a SpidR/DinoSR model")
            return other.TransformersLayerExtractor(model, *args, **kwargs)
        return super().__new__(cls)

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
        from hubertlab.models.checkpoint import from_pretrained

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
                from hubertlab.models.spidr import intermediate_outputs

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
        out = np.empty((total, self.dim), np.float32)
        for first, last, lo, hi in chunks(total, self.chunk_frames, self.context_frames):
            piece = wav_t[lo * FRAME_HOP : (hi - 1) * FRAME_HOP + RECEPTIVE_FIELD]
            feats = self._run(piece)
            if feats.shape[0] != hi - lo:
                raise ValueError(
                    f"model gave {feats.shape[0]} frames for {len(piece)} samples, expected "
                    f"{hi - lo}; its CNN does not have a 400-sample window and 320-sample hop"
                )
            out[first:last] = feats[first - lo : last - lo].cpu().numpy()
        return out
