"""Layer features of speech encoders of other transformers families (WavLM, wav2vec 2.0,
data2vec audio...), through transformers' own classes: layer L is hidden_states[L] of
`AutoModel(..., output_hidden_states=True)` (0: the Transformer input), at 50 Hz.

BabyHuBERT's first iteration clusters WavLM-base-plus layer 6. HuBERT folders keep going
through our own model (hubertlab.models.checkpoint); the factory (features/extractors.py)
hands any other transformers folder to TransformersLayerExtractor, which has the
LayerExtractor's interface (dim, frame_rate_hz, settings(), num_frames(n), __call__(wav)) and
its chunk loop (hubertlab.features.chunked). The waveform is standardised over the whole file
when the model expects it (its preprocessor_config.json's do_normalize; without one, models
with a layer-normed CNN).
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hubertlab.constants import FRAME_HOP, LABEL_RATE_HZ, RECEPTIVE_FIELD, conv_layout, num_frames
from hubertlab.data.audio import standardize_waveform
from hubertlab.features.chunked import chunk_options, extract_in_chunks
from hubertlab.models.backbone import standardize
from hubertlab.models.safe_load import CheckpointError, safe_load


def transformers_model_type(path: str | Path) -> str | None:
    """The model_type of a transformers model folder (or of its weights file's folder), None
    for anything else (our own folders, checkpoint files, missing paths)."""
    path = Path(path)
    folder = path.parent if path.suffix in (".safetensors", ".bin") else path
    config = folder / "config.json"
    if not config.is_file():
        return None
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") == "hubertlab":
        return None
    model_type = data.get("model_type")
    return model_type if isinstance(model_type, str) else None


def is_other_transformers_model(path: str | Path) -> bool:
    """A transformers folder of another family than HuBERT (which our own model reads)."""
    model_type = transformers_model_type(path)
    return model_type is not None and model_type != "hubert"


@dataclass(frozen=True)
class EncoderConfig:
    """What the feature and ABX code read of a model's config (as of our BackboneConfig)."""

    num_layers: int
    hidden_dim: int
    normalize_waveform: bool
    model_type: str


class TransformersEncoder(torch.nn.Module):
    """A transformers speech encoder behind our Backbone's extract_features: hidden states
    [Transformer input, layer 1, ..., layer L], each (batch, frames, dim), and frame lengths.
    `num_layers` keeps only the layers needed for hidden_states[num_layers] (faster; same
    values)."""

    def __init__(self, path: str | Path, *, num_layers: int | None = None) -> None:
        super().__init__()
        # lazy: transformers is an optional dependency (hubertlab[interop]), slow to import
        from transformers import AutoModel

        path = Path(path)
        folder = path.parent if path.suffix in (".safetensors", ".bin") else path
        self.source = str(folder)
        try:
            model = AutoModel.from_pretrained(str(folder))
        except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
            raise _unreadable_weights(folder, e) from None
        config = model.config
        _check_frame_layout(config, self.source)
        total = int(config.num_hidden_layers)
        if num_layers is not None and not 0 <= num_layers <= total:
            raise ValueError(f"layer must be in [0, {total}] for {self.source}, got {num_layers}")
        if num_layers is not None and num_layers < total:
            # Pre-LN encoders put their final LayerNorm on the last kept layer's output:
            # keep one layer more so hidden_states[num_layers] is the plain layer output.
            keep = num_layers + 1 if getattr(config, "do_stable_layer_norm", False) else num_layers
            model.encoder.layers = model.encoder.layers[:keep]
        self.model = model.eval()
        self.cfg = EncoderConfig(
            num_layers=total if num_layers is None else num_layers,
            hidden_dim=int(config.hidden_size),
            normalize_waveform=_normalizes(folder, config),
            model_type=str(config.model_type),
        )

    def extract_features(
        self,
        waveforms: torch.Tensor,
        lengths: torch.Tensor | None = None,
        *,
        output_layer: int | None = None,
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(hidden states 0..output_layer, frame lengths) of (batch, samples) waveforms."""
        last = self.cfg.num_layers if output_layer is None else output_layer
        if not 0 <= last <= self.cfg.num_layers:
            raise ValueError(f"output_layer must be in [0, {self.cfg.num_layers}], got {last}")
        if lengths is None:
            lengths = torch.full((waveforms.shape[0],), waveforms.shape[1], dtype=torch.long)
        if self.cfg.normalize_waveform:
            waveforms = standardize(waveforms, lengths)
        mask = None
        if bool((lengths < waveforms.shape[1]).any()):
            mask = torch.arange(waveforms.shape[1], device=waveforms.device) < lengths[:, None]
            mask = mask.long()
        out = self.model(waveforms, attention_mask=mask, output_hidden_states=True)
        frame_lengths = torch.tensor([num_frames(int(n)) for n in lengths])
        return list(out.hidden_states[: last + 1]), frame_lengths


class TransformersLayerExtractor:
    """Feature-store extractor for hidden_states[layer] of a transformers model folder of
    another family than HuBERT (WavLM, wav2vec 2.0, data2vec audio)."""

    frame_rate_hz = LABEL_RATE_HZ

    def __init__(
        self,
        model: str | Path,
        layer: int,
        *,
        device: str | None = None,
        dtype: str = "float32",
        chunk_seconds: float = 30.0,
        context_seconds: float = 2.0,
    ) -> None:
        self.chunk_frames, self.context_frames = chunk_options(
            dtype, chunk_seconds, context_seconds
        )
        if not Path(model).exists():
            raise FileNotFoundError(f"checkpoint not found: {model}")
        self.checkpoint = str(model)
        if layer < 1:
            raise ValueError(f"layer must be >= 1 (hidden_states[layer]), got {layer}")
        self.encoder = TransformersEncoder(model, num_layers=layer)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.encoder.to(self.device)
        self.layer, self.dtype = layer, dtype
        self.dim = self.encoder.cfg.hidden_dim

    def settings(self) -> dict:
        return {
            "kind": "layer", "layer": self.layer, "checkpoint": self.checkpoint,
            "model_type": self.encoder.cfg.model_type, "dim": self.dim,
            "frame_rate_hz": self.frame_rate_hz,
        }  # fmt: skip

    def num_frames(self, num_samples: int) -> int:
        return num_frames(num_samples)

    @torch.inference_mode()
    def _run(self, wav: torch.Tensor) -> torch.Tensor:
        with torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.dtype == "bfloat16"
        ):
            # Standardised over the whole file by __call__, never per chunk.
            hidden = self.encoder.model(wav[None], output_hidden_states=True).hidden_states
        return hidden[self.layer][0].float()  # (frames, dim)

    def __call__(self, wav: np.ndarray) -> np.ndarray:
        """(num_samples,) float32 waveform -> (num_frames(num_samples), dim) float32."""
        total = num_frames(len(wav))
        if total == 0:
            return np.zeros((0, self.dim), np.float32)
        if self.encoder.cfg.normalize_waveform:
            wav = standardize_waveform(wav)
        wav_t = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)).to(self.device)
        # The last chunk takes the file's tail too (< 320 samples, no extra frame): WavLM and
        # wav2vec 2.0 base have a GroupNorm CNN.
        return extract_in_chunks(
            wav_t, self._run, self.dim, self.chunk_frames, self.context_frames,
            take_tail=True, where=self.checkpoint,
        )  # fmt: skip


def _unreadable_weights(folder: Path, error: Exception) -> Exception:
    """transformers loads pickle (.bin) weights with torch's weights-only unpickler; when that
    refuses a file (a pickle that would run code) or torch cannot read it (damaged), our own
    allow-list loader names the file and the reason instead of torch's advice to turn the
    safe loader off. Anything else is not a weights problem: the error stays as it was."""
    for path in sorted(folder.glob("pytorch_model*.bin")):  # not training_args.bin
        safe_load(path)  # raises CheckpointError naming the file
    if isinstance(error, pickle.UnpicklingError):
        return CheckpointError(f"{folder}: its weights cannot be unpickled safely ({error!s:.200})")
    return error


def _check_frame_layout(config, where: str) -> None:
    """The CNN must give 400-sample windows every 320 samples: the frame grid of every unit
    and manifest (hubertlab.constants)."""
    window, hop = conv_layout(config.conv_kernel, config.conv_stride)
    if (window, hop) != (RECEPTIVE_FIELD, FRAME_HOP):
        raise ValueError(
            f"{where}: its CNN has a {window}-sample window and {hop}-sample hop; hubertlab's "
            f"frames are {RECEPTIVE_FIELD} and {FRAME_HOP}"
        )


def _normalizes(folder: Path, config) -> bool:
    """Whether the model expects standardised waveforms (its feature extractor's setting)."""
    preprocessor = folder / "preprocessor_config.json"
    if preprocessor.is_file():
        return bool(json.loads(preprocessor.read_text(encoding="utf-8")).get("do_normalize"))
    return getattr(config, "feat_extract_norm", "group") == "layer"
