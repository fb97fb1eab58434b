"""HuBERT model config: one frozen dataclass, presets for the published sizes and a tiny one.

Each field notes the fairseq name it corresponds to (`model.<name>` in a fairseq config,
`criterion.<name>` for the loss, `task.<name>` for data options).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from hubertlab.config import from_dict

# The HuBERT CNN layout (REFERENCE 2.2): 400-sample receptive field, 320-sample hop.
CONV_KERNELS = (10, 3, 3, 3, 3, 2, 2)
CONV_STRIDES = (5, 2, 2, 2, 2, 2, 2)


@dataclass(frozen=True)
class HubertConfig:
    """Architecture, masking and loss settings of a HuBERT model."""

    # --- CNN waveform encoder (fairseq: model.conv_feature_layers) ---
    conv_channels: tuple[int, ...] = (512,) * 7
    conv_kernels: tuple[int, ...] = CONV_KERNELS
    conv_strides: tuple[int, ...] = CONV_STRIDES
    # "group": GroupNorm on layer 0 only (base); "layer": LayerNorm in every layer (large).
    conv_norm: Literal["group", "layer"] = "group"  # model.extractor_mode (default/layer_norm)
    conv_bias: bool = False  # model.conv_bias
    # --- Transformer ---
    hidden_dim: int = 768  # model.encoder_embed_dim
    num_layers: int = 12  # model.encoder_layers
    num_heads: int = 12  # model.encoder_attention_heads
    ffn_dim: int = 3072  # model.encoder_ffn_embed_dim
    pre_ln: bool = False  # model.layer_norm_first (True for large/xlarge)
    pos_conv_kernel: int = 128  # model.conv_pos
    pos_conv_groups: int = 16  # model.conv_pos_groups
    layer_norm_eps: float = 1e-5
    # --- Regularisation ---
    dropout: float = 0.1  # model.dropout (residual branches and encoder input)
    attention_dropout: float = 0.1  # model.attention_dropout
    activation_dropout: float = 0.0  # model.activation_dropout
    input_dropout: float = 0.1  # model.dropout_input (after the feature projection)
    layerdrop: float = 0.05  # model.encoder_layerdrop
    # fairseq's model.dropout_features only touches HuBERT's unused unmasked targets: not kept.
    # --- Pretraining head and loss ---
    final_dim: int = 256  # model.final_dim
    num_units: tuple[int, ...] = (100,)  # one entry per label set (task.labels dictionaries)
    logit_temp: float = 0.1  # model.logit_temp
    unmasked_weight: float = 0.0  # criterion.pred_nomask_weight (masked weight is 1)
    feature_penalty_weight: float = 10.0  # criterion.loss_weights[-1] (features_pen)
    feature_grad_mult: float = 0.1  # model.feature_grad_mult
    # --- Masking (REFERENCE 2.4) ---
    mask_prob: float = 0.8  # model.mask_prob
    mask_length: int = 10  # model.mask_length
    min_masks: int = 2  # min_masks of fairseq's compute_mask_indices
    # Standardize each waveform over its valid samples (large/xlarge were trained this way).
    normalize_waveform: bool = False  # task.normalize

    def __post_init__(self) -> None:
        n_conv = len(self.conv_channels)
        if n_conv == 0 or len(self.conv_kernels) != n_conv or len(self.conv_strides) != n_conv:
            raise ValueError(
                "conv_channels, conv_kernels and conv_strides must be non-empty and equally long "
                f"(got {n_conv}, {len(self.conv_kernels)}, {len(self.conv_strides)})"
            )
        for name in (
            "hidden_dim",
            "num_layers",
            "num_heads",
            "ffn_dim",
            "final_dim",
            "pos_conv_kernel",
            "pos_conv_groups",
            "mask_length",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.hidden_dim % self.num_heads:
            raise ValueError(
                f"hidden_dim ({self.hidden_dim}) must be divisible by num_heads ({self.num_heads})"
            )
        if self.hidden_dim % self.pos_conv_groups:
            raise ValueError(
                f"hidden_dim ({self.hidden_dim}) must be divisible by pos_conv_groups "
                f"({self.pos_conv_groups})"
            )
        for name in (
            "dropout",
            "attention_dropout",
            "activation_dropout",
            "input_dropout",
            "layerdrop",
            "mask_prob",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not self.num_units or min(self.num_units) < 1:
            raise ValueError(f"num_units must list positive unit counts, got {self.num_units}")
        if self.logit_temp <= 0:
            raise ValueError(f"logit_temp must be > 0, got {self.logit_temp}")
        for name in ("unmasked_weight", "feature_penalty_weight", "feature_grad_mult", "min_masks"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def conv_dim(self) -> int:
        """Channels of the CNN output (the input of the feature projection)."""
        return self.conv_channels[-1]

    @staticmethod
    def preset(name: str, **overrides: Any) -> HubertConfig:
        """A named size ("tiny", "base", "large", "xlarge") with fields replaced by `overrides`."""
        if name not in PRESETS:
            raise ValueError(f"unknown model preset {name!r} (known: {', '.join(PRESETS)})")
        return dataclasses.replace(PRESETS[name], **overrides)

    @staticmethod
    def from_dict(data: dict[str, Any], *, where: str = "model") -> HubertConfig:
        """Build from a plain mapping; a "preset" key picks the starting point."""
        data = dict(data)
        preset = data.pop("preset", None)
        cfg = from_dict(HubertConfig, data, where=where)
        if preset is None:
            return cfg
        explicit = {k: getattr(cfg, k) for k in data}
        return HubertConfig.preset(preset, **explicit)


_LARGE_COMMON = dict(
    conv_norm="layer",
    conv_bias=True,
    pre_ln=True,
    dropout=0.0,
    attention_dropout=0.0,
    activation_dropout=0.0,
    input_dropout=0.0,
    layerdrop=0.0,
    normalize_waveform=True,
)

PRESETS: dict[str, HubertConfig] = {
    "base": HubertConfig(),
    "large": HubertConfig(
        hidden_dim=1024,
        num_layers=24,
        num_heads=16,
        ffn_dim=4096,
        final_dim=768,
        **_LARGE_COMMON,
    ),
    "xlarge": HubertConfig(
        hidden_dim=1280,
        num_layers=48,
        num_heads=16,
        ffn_dim=5120,
        final_dim=1024,
        **_LARGE_COMMON,
    ),
    # Trains in minutes on 2 CPU cores (REFERENCE 11); the unmasked loss is what makes it learn.
    "tiny": HubertConfig(
        conv_channels=(128,) * 7,
        hidden_dim=256,
        num_layers=4,
        num_heads=4,
        ffn_dim=1024,
        final_dim=128,
        pos_conv_kernel=128,
        pos_conv_groups=16,
        dropout=0.05,
        attention_dropout=0.05,
        input_dropout=0.05,
        layerdrop=0.0,
        unmasked_weight=1.0,
    ),
}
