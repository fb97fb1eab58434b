"""State-dict keys of SpidR/DinoSR between the spidr package (its released checkpoints,
REFERENCE 7.1) and ours, both ways, and their configs.

Theirs: feature_extractor.conv_layers.{i}.{conv,layer_norm}.*, feature_projection.*,
student.* / teacher.* (pos_conv_embed.convs.{i}, layer_norm, layers.{i}.{attention.qkv,
attention.proj, layer_norm, feed_forward.{intermediate,output}_dense, final_layer_norm}),
heads.{i}.0.*, codebooks.{i}.{codebook,counts}, mask_embedding, current_step.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from hubertlab.models.spidr_config import DistillConfig

# (theirs, ours) name pieces; "{i}" stands for a layer number. Inside an encoder (student or
# teacher) first, then the rest of the model.
_ENCODER = (
    ("pos_conv_embed.convs.{i}.", "pos_conv.convs.{i}."),
    ("layer_norm.", "norm."),
    ("layers.{i}.attention.qkv.", "layers.{i}.attention.qkv."),
    ("layers.{i}.attention.proj.", "layers.{i}.attention.out."),
    ("layers.{i}.layer_norm.", "layers.{i}.attn_norm."),
    ("layers.{i}.feed_forward.intermediate_dense.", "layers.{i}.fc1."),
    ("layers.{i}.feed_forward.output_dense.", "layers.{i}.fc2."),
    ("layers.{i}.final_layer_norm.", "layers.{i}.ffn_norm."),
)
_RULES = (
    ("feature_extractor.conv_layers.{i}.conv.", "backbone.cnn.layers.{i}.conv."),
    ("feature_extractor.conv_layers.{i}.layer_norm.", "backbone.cnn.layers.{i}.norm."),
    ("feature_projection.layer_norm.", "backbone.feature_norm."),
    ("feature_projection.projection.", "backbone.feature_proj."),
    ("heads.{i}.0.", "heads.{i}."),
    ("codebooks.{i}.codebook", "codebooks.{i}.sums"),
    ("codebooks.{i}.counts", "codebooks.{i}.counts"),
    ("mask_embedding", "mask_embedding"),
    ("current_step", "current_step"),
    *((f"student.{a}", f"backbone.encoder.{b}") for a, b in _ENCODER),
    *((f"teacher.{a}", f"teacher.{b}") for a, b in _ENCODER),
)


def _pattern(template: str) -> re.Pattern[str]:
    """A template as a regex of a whole key (ending in "." : a prefix of one)."""
    body = re.escape(template).replace(re.escape("{i}"), r"(?P<i>\d+)")
    return re.compile(body + ("(?P<rest>.+)" if template.endswith(".") else "") + "$")


_FORWARD = tuple((_pattern(a), b) for a, b in _RULES)
_BACKWARD = tuple((_pattern(b), a) for a, b in _RULES)


def _rename(key: str, rules) -> str | None:
    for pattern, template in rules:
        m = pattern.match(key)
        if m:
            groups = m.groupdict()
            return template.replace("{i}", groups.get("i") or "") + (groups.get("rest") or "")
    return None


def strip_module_prefix(state: dict[str, Any]) -> dict[str, Any]:
    """Drop the "module." prefix DDP-wrapped saves put on every key."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return state


def spidr_to_ours(state: dict[str, torch.Tensor], where: str = "state dict") -> dict[str, Any]:
    """The spidr package's keys -> ours; an unknown key is an error naming it."""
    out = {}
    for key, value in strip_module_prefix(state).items():
        ours = _rename(key, _FORWARD)
        if ours is None:
            raise ValueError(f"{where}: key {key!r} is not a SpidR/DinoSR state-dict key")
        out[ours] = value
    return out


def ours_to_spidr(state: dict[str, torch.Tensor], where: str = "state dict") -> dict[str, Any]:
    """Our keys -> the spidr package's (what its load_state_dict takes)."""
    out = {}
    for key, value in state.items():
        theirs = _rename(key, _BACKWARD)
        if theirs is None:
            raise ValueError(f"{where}: key {key!r} has no spidr package name")
        out[theirs] = value
    return out


def looks_like_spidr(state: dict[str, Any]) -> bool:
    """Whether a state dict has the spidr package's layout."""
    keys = strip_module_prefix(state).keys()
    return any(k.startswith("student.layers.") for k in keys) and any(
        k.startswith("codebooks.") for k in keys
    )


def config_from_spidr_state(
    state: dict[str, torch.Tensor], kind: str, where: str = "checkpoint"
) -> DistillConfig:
    """The config of a spidr-package state dict: the base preset of `kind` with the sizes the
    tensors show (layers, width, heads' and codebooks' counts, CNN channels)."""
    state = strip_module_prefix(state)
    layer_ids = {int(m.group(1)) for k in state if (m := re.match(r"student\.layers\.(\d+)\.", k))}
    conv_ids = sorted(
        {
            int(m.group(1))
            for k in state
            if (m := re.match(r"feature_extractor\.conv_layers\.(\d+)\.", k))
        }
    )
    pos_ids = {
        int(m.group(1))
        for k in state
        if (m := re.match(r"student\.pos_conv_embed\.convs\.(\d+)\.", k))
    }
    num_codebooks = len({k for k in state if re.fullmatch(r"codebooks\.\d+\.counts", k)})
    if not layer_ids or not conv_ids or not pos_ids or not num_codebooks:
        raise ValueError(
            f"{where}: not a SpidR/DinoSR state dict (student layers or codebooks missing)"
        )
    dim = state["mask_embedding"].shape[0]
    pos_weight = state["student.pos_conv_embed.convs.0.weight"]  # (dim, dim / groups, kernel)
    ffn = state["student.layers.0.feed_forward.intermediate_dense.weight"].shape[0]
    base = DistillConfig.preset(kind, "base")
    overrides: dict[str, Any] = {
        "hidden_dim": dim,
        "num_layers": len(layer_ids),
        "ffn_dim": ffn,
        "conv_channels": tuple(
            state[f"feature_extractor.conv_layers.{i}.conv.weight"].shape[0] for i in conv_ids
        ),
        "pos_conv_layers": len(pos_ids),
        "pos_conv_kernel": pos_weight.shape[2],
        "pos_conv_groups": dim // pos_weight.shape[1],
        "qkv_bias": "student.layers.0.attention.qkv.bias" in state,
        "num_codebooks": num_codebooks,
        "codebook_size": state["codebooks.0.counts"].shape[0],
    }
    if dim % 64 == 0 and dim != base.backbone.hidden_dim:
        overrides["num_heads"] = dim // 64
    if len(conv_ids) != len(base.backbone.conv_channels):
        raise ValueError(f"{where}: {len(conv_ids)} conv layers; only the 7-layer CNN is known")
    return DistillConfig.preset(kind, "base", **overrides)
