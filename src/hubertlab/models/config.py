"""Model configs: the backbone (CNN + feature projection + Transformer) that every model shares,
and HuBERT's head and loss on top of it. Frozen dataclasses with presets for the published
sizes and a tiny one. Span masking is a data setting (the `[mask]` table, data.masking).

Each field notes the fairseq name it corresponds to (`model.<name>` in a fairseq config,
`criterion.<name>` for the loss, `task.<name>` for data options).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Literal

from hubertlab.config import ConfigError, from_dict
from hubertlab.constants import FRAME_HOP, RECEPTIVE_FIELD, conv_layout
from hubertlab.data.masking import MASK_KEYS, MaskConfig

log = logging.getLogger(__name__)

# The HuBERT CNN layout (REFERENCE 2.2): 400-sample receptive field, 320-sample hop.
CONV_KERNELS = (10, 3, 3, 3, 3, 2, 2)
CONV_STRIDES = (5, 2, 2, 2, 2, 2, 2)


@dataclass(frozen=True)
class FrameLayout:
    """Where CNN frames lie in the waveform: frame k covers samples [hop k, hop k + window)."""

    window: int  # receptive field in samples
    hop: int

    def num_frames(self, num_samples: int) -> int:
        return 0 if num_samples < self.window else (num_samples - self.window) // self.hop + 1


@dataclass(frozen=True)
class BackboneConfig:
    """CNN waveform encoder, feature projection and Transformer encoder."""

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
    qkv_bias: bool = True  # SpidR/DinoSR: no bias on the fused qkv projection
    # "weight_norm": one grouped conv with weight norm (HuBERT, wav2vec 2.0); "stacked":
    # pos_conv_layers grouped convs, each + LayerNorm without affine + GELU (data2vec 2, SpidR).
    pos_conv: Literal["weight_norm", "stacked"] = "weight_norm"
    pos_conv_kernel: int = 128  # model.conv_pos
    pos_conv_groups: int = 16  # model.conv_pos_groups
    pos_conv_layers: int = 1  # stacked only (SpidR: 5)
    layer_norm_eps: float = 1e-5
    # --- Regularisation ---
    dropout: float = 0.1  # model.dropout (residual branches and encoder input)
    attention_dropout: float = 0.1  # model.attention_dropout
    activation_dropout: float = 0.0  # model.activation_dropout
    input_dropout: float = 0.1  # model.dropout_input (after the feature projection)
    layerdrop: float = 0.05  # model.encoder_layerdrop
    feature_grad_mult: float = 0.1  # model.feature_grad_mult (0: the CNN does not train)
    # Standardize each waveform over its valid samples (large/xlarge were trained this way).
    normalize_waveform: bool = False  # task.normalize

    def __post_init__(self) -> None:
        n_conv = len(self.conv_channels)
        if n_conv == 0 or len(self.conv_kernels) != n_conv or len(self.conv_strides) != n_conv:
            raise ValueError(
                "conv_channels, conv_kernels and conv_strides must be non-empty and equally long "
                f"(got {n_conv}, {len(self.conv_kernels)}, {len(self.conv_strides)})"
            )
        for name in ("conv_channels", "conv_kernels", "conv_strides"):
            if min(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be positive, got {list(getattr(self, name))}")
        for name in ("hidden_dim", "num_layers", "num_heads", "ffn_dim", "pos_conv_kernel"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("pos_conv_groups", "pos_conv_layers"):
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
        if self.pos_conv == "weight_norm" and self.pos_conv_layers != 1:
            raise ValueError("pos_conv_layers > 1 needs pos_conv = 'stacked'")
        for name in ("dropout", "attention_dropout", "activation_dropout", "input_dropout"):
            _check_probability(self, name)
        _check_probability(self, "layerdrop")
        if self.feature_grad_mult < 0:
            raise ValueError(f"feature_grad_mult must be >= 0, got {self.feature_grad_mult}")

    @property
    def conv_dim(self) -> int:
        """Channels of the CNN output (the input of the feature projection)."""
        return self.conv_channels[-1]

    @property
    def frame_layout(self) -> FrameLayout:
        """Receptive field and hop of the CNN, from its kernels and strides."""
        return FrameLayout(*conv_layout(self.conv_kernels, self.conv_strides))

    def check_frame_layout(self) -> None:
        """Refuse a CNN whose frames the data pipeline cannot label: every label, mask and unit
        file is laid out on 400-sample windows every 320 samples (hubertlab.constants)."""
        layout = self.frame_layout
        if (layout.window, layout.hop) != (RECEPTIVE_FIELD, FRAME_HOP):
            raise ValueError(
                f"conv_kernels {list(self.conv_kernels)} and conv_strides "
                f"{list(self.conv_strides)} give {layout.window}-sample frames every "
                f"{layout.hop} samples; the data pipeline labels {RECEPTIVE_FIELD}-sample frames "
                f"every {FRAME_HOP} samples"
            )


@dataclass(frozen=True)
class HubertConfig:
    """A HuBERT model: the backbone, its masked-prediction head and loss."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    # --- Pretraining head and loss ---
    final_dim: int = 256  # model.final_dim
    num_units: tuple[int, ...] = (100,)  # one entry per label set (task.labels dictionaries)
    logit_temp: float = 0.1  # model.logit_temp
    unmasked_weight: float = 0.0  # criterion.pred_nomask_weight (masked weight is 1)
    feature_penalty_weight: float = 10.0  # criterion.loss_weights[-1] (features_pen)

    def __post_init__(self) -> None:
        if self.final_dim < 1:
            raise ValueError(f"final_dim must be >= 1, got {self.final_dim}")
        if not self.num_units or min(self.num_units) < 1:
            raise ValueError(f"num_units must list positive unit counts, got {self.num_units}")
        if self.logit_temp <= 0:
            raise ValueError(f"logit_temp must be > 0, got {self.logit_temp}")
        for name in ("unmasked_weight", "feature_penalty_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @staticmethod
    def preset(name: str, **overrides: Any) -> HubertConfig:
        """A named size ("tiny", "base", "large", "xlarge") with fields replaced by `overrides`
        (backbone fields may be given flat: `hidden_dim=128`)."""
        if name not in PRESETS:
            raise ValueError(f"unknown model preset {name!r} (known: {', '.join(PRESETS)})")
        return replace_fields(PRESETS[name], overrides)

    @staticmethod
    def from_dict(data: dict[str, Any], *, where: str = "model") -> HubertConfig:
        """Build from a mapping: nested ({"backbone": {...}, ...}) as to_dict writes it, or flat
        as checkpoints written before the backbone split and `[model.overrides]` tables hold
        it. A "preset" key picks the starting point; the result is checked once, whole."""
        data = drop_mask_keys(data, where)
        preset = data.pop("preset", None)
        base = PRESETS["base"] if preset is None else HubertConfig.preset(preset)
        check_keys(HubertConfig, data, where)
        nested = split_flat(HubertConfig, data)
        backbone = {**to_plain(base.backbone), **nested.pop("backbone", {})}
        merged = {**to_plain(base), **nested, "backbone": backbone}
        return from_dict(HubertConfig, merged, where=where)


def _check_probability(cfg: Any, name: str) -> None:
    if not 0.0 <= getattr(cfg, name) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {getattr(cfg, name)}")


BACKBONE_FIELDS = frozenset(f.name for f in dataclasses.fields(BackboneConfig))


def drop_mask_keys(data: dict[str, Any], where: str) -> dict[str, Any]:
    """A copy of a stored model config without the mask keys that model configs held before
    masking moved to the `[mask]` table (checkpoints of then still load); a value other than
    the [mask] default is named, since training on from this model no longer masks with it."""
    data = dict(data)
    for key in MASK_KEYS:
        value = data.pop(key, None)
        if value is not None and value != getattr(MaskConfig, key):
            # Info, not a warning: reading the model for features or scores is unaffected.
            log.info(
                "%s: %s = %s is not used: masking is the [mask] table of a training config now",
                where, key, value,
            )  # fmt: skip
    return data


def check_keys(cls: type, data: dict[str, Any], where: str) -> None:
    """An unknown key of a model config (flat or nested) is an error naming it."""
    known = {f.name for f in dataclasses.fields(cls)} | BACKBONE_FIELDS
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r} (known keys: {', '.join(sorted(known))})"
        )


def split_flat(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """Move flat backbone keys of `data` under "backbone" (for a config class with a `backbone`
    field); keys of neither are left for from_dict to name as unknown."""
    own = {f.name for f in dataclasses.fields(cls)}
    out = {k: v for k, v in data.items() if k in own or k not in BACKBONE_FIELDS}
    flat = {k: v for k, v in data.items() if k in BACKBONE_FIELDS and k not in own}
    if flat:
        backbone = dict(out.get("backbone") or {})
        out["backbone"] = {**backbone, **flat}
    return out


def replace_fields(cfg: Any, overrides: dict[str, Any]) -> Any:
    """dataclasses.replace for a model config, with backbone fields allowed flat; the whole
    result is checked once (a preset's own values never fail on an override's behalf)."""
    nested = split_flat(type(cfg), overrides)
    backbone = nested.pop("backbone", None)
    if backbone:
        if isinstance(backbone, BackboneConfig):
            backbone = to_plain(backbone)
        nested["backbone"] = dataclasses.replace(cfg.backbone, **backbone)
    return dataclasses.replace(cfg, **nested)


def to_plain(cfg: Any) -> dict[str, Any]:
    """A config's own fields as a dict (nested configs as dicts), for merging."""
    return {
        f.name: to_plain(v) if dataclasses.is_dataclass(v := getattr(cfg, f.name)) else v
        for f in dataclasses.fields(cfg)
    }


_LARGE_BACKBONE = dict(
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

BACKBONE_PRESETS: dict[str, BackboneConfig] = {
    "base": BackboneConfig(),
    "large": BackboneConfig(
        hidden_dim=1024, num_layers=24, num_heads=16, ffn_dim=4096, **_LARGE_BACKBONE
    ),
    "xlarge": BackboneConfig(
        hidden_dim=1280, num_layers=48, num_heads=16, ffn_dim=5120, **_LARGE_BACKBONE
    ),
    # Trains in minutes on 2 CPU cores (REFERENCE 11).
    "tiny": BackboneConfig(
        conv_channels=(128,) * 7,
        hidden_dim=256,
        num_layers=4,
        num_heads=4,
        ffn_dim=1024,
        dropout=0.05,
        attention_dropout=0.05,
        input_dropout=0.05,
        layerdrop=0.0,
    ),
}

PRESETS: dict[str, HubertConfig] = {
    "base": HubertConfig(),
    "large": HubertConfig(backbone=BACKBONE_PRESETS["large"], final_dim=768),
    "xlarge": HubertConfig(backbone=BACKBONE_PRESETS["xlarge"], final_dim=1024),
    # The unmasked loss is what makes the tiny model learn in minutes (REFERENCE 11).
    "tiny": HubertConfig(backbone=BACKBONE_PRESETS["tiny"], final_dim=128, unmasked_weight=1.0),
}
