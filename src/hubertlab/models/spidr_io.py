"""Reading and writing SpidR/DinoSR weights: our save_pretrained folders and training
checkpoints, the spidr package's files (its released spidr_base.pt / dinosr_base_reproduced.pt:
a dict whose "model" is the state dict, maybe with "module." prefixes, and a config.json beside
it when the sizes are not the base ones), and export to a file the spidr package loads.

A spidr-package state dict does not say whether it is SpidR or DinoSR (same keys): the caller
says so (`kind`), else the file name decides ("dinosr" in it: DinoSR) and the choice is logged.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from hubertlab.config import to_dict
from hubertlab.fileio import atomic_write_json
from hubertlab.models.config import replace_fields
from hubertlab.models.safe_load import CheckpointError, safe_load
from hubertlab.models.spidr import DistillModel
from hubertlab.models.spidr_config import DistillConfig
from hubertlab.models.spidr_keys import (
    config_from_spidr_state,
    looks_like_spidr,
    ours_to_spidr,
    spidr_to_ours,
    strip_module_prefix,
)

log = logging.getLogger(__name__)

KINDS = ("spidr", "dinosr")


def distill_kind(path: str | Path, *, loaded: Any = None) -> str | None:
    """ "spidr" or "dinosr" if `path` holds such a model in a layout we read, else None.
    `loaded`: the file's object when the caller has read it already (it is not read again)."""
    path = Path(path)
    if path.is_dir() or path.suffix == ".safetensors":
        folder = path if path.is_dir() else path.parent
        config = folder / "config.json"
        if not config.is_file():
            return None
        kind = json.loads(config.read_text()).get("model_kind")
        return kind if kind in KINDS else None
    if not path.is_file():
        return None
    return _kind_of_object(safe_load(path) if loaded is None else loaded, path, None)


def _kind_of_object(obj: Any, path: Path, kind: str | None) -> str | None:
    if not isinstance(obj, dict):
        return None
    if obj.get("model_kind") in KINDS:
        return obj["model_kind"]
    state = obj.get("model", obj)
    if isinstance(state, dict) and looks_like_spidr(state):
        return kind or ("dinosr" if "dinosr" in path.name.lower() else "spidr")
    return None


def read_distill_checkpoint(
    path: str | Path, *, kind: str | None = None, loaded: Any = None
) -> tuple[DistillConfig, dict[str, torch.Tensor]]:
    """(config, our-layout state dict) of a SpidR/DinoSR folder or file (see the module doc);
    `kind` names the model of a spidr-package file; `loaded` is the file's object if read."""
    path = Path(path)
    if path.is_dir() or path.suffix == ".safetensors":
        folder = path if path.is_dir() else path.parent
        config = json.loads((folder / "config.json").read_text())
        cfg = DistillConfig.from_dict(config["model_config"], where=f"{folder}/config.json")
        return cfg, load_file(str(folder / "model.safetensors"))
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    obj = safe_load(path) if loaded is None else loaded
    found = _kind_of_object(obj, path, kind)
    if found is None:
        raise CheckpointError(f"{path}: not a SpidR/DinoSR checkpoint")
    if "model_config" in obj:  # one of our training checkpoints
        cfg = DistillConfig.from_dict(obj["model_config"], where=f"{path}:model_config")
        return cfg, dict(obj["model"])
    state = strip_module_prefix(dict(obj.get("model", obj)))
    if kind is None:
        log.info("%s: read as a %s checkpoint (pass kind= to choose)", path, found)
    beside = path.parent / "config.json"
    if beside.is_file():
        spidr_cfg = json.loads(beside.read_text())
        cfg = config_from_spidr_json(spidr_cfg.get("model", spidr_cfg), found, str(beside))
    else:
        cfg = config_from_spidr_state(state, found, where=str(path))
    return cfg, spidr_to_ours(state, where=str(path))


def load_distill(
    path: str | Path, *, kind: str | None = None, loaded: Any = None, **overrides: Any
) -> DistillModel:
    """A DistillModel from any layout read_distill_checkpoint reads (`loaded`: the file's
    object if read already); `overrides` replace config fields that do not change shapes."""
    cfg, state = read_distill_checkpoint(path, kind=kind, loaded=loaded)
    if overrides:
        cfg = replace_fields(cfg, overrides)
    model = DistillModel(cfg)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: the weights do not fit the model: {e}") from None
    return model


# Our config -> the spidr package's DinoSRConfig / SpidRConfig fields.
def spidr_config_dict(cfg: DistillConfig) -> dict[str, Any]:
    """The spidr package's model config (its config.json "model" table) for `cfg`."""
    b = cfg.backbone
    out: dict[str, Any] = {
        "extractor_mode": "layer_norm" if b.conv_norm == "layer" else "group_norm",
        "extractor_conv_bias": b.conv_bias,
        "extractor_conv_layer_config": [
            [c, k, s]
            for c, k, s in zip(b.conv_channels, b.conv_kernels, b.conv_strides, strict=True)
        ],
        "encoder_embed_dim": b.hidden_dim,
        "encoder_projection_dropout": b.input_dropout,
        # spidr splits one kernel over the layers: each gets max(3, kernel // depth).
        "encoder_pos_conv_kernel": b.pos_conv_kernel * b.pos_conv_layers,
        "encoder_pos_conv_groups": b.pos_conv_groups,
        "encoder_pos_conv_depth": b.pos_conv_layers,
        "encoder_num_layers": b.num_layers,
        "encoder_num_heads": b.num_heads,
        "encoder_attention_dropout": b.attention_dropout,
        "encoder_ff_interm_features": b.ffn_dim,
        "encoder_ff_interm_dropout": b.activation_dropout,
        "encoder_dropout": b.dropout,
        "encoder_layer_norm_first": b.pre_ln,
        "encoder_layer_drop": b.layerdrop,
        "encoder_qkv_bias": b.qkv_bias,
        "codebook_size": cfg.codebook_size,
        "codebook_decay": cfg.codebook_decay,
        "num_codebooks": cfg.num_codebooks,
        "ema_start_decay": cfg.ema_start_decay,
        "ema_final_decay": cfg.ema_final_decay,
        "ema_final_step": cfg.ema_final_step,
        "freeze_step": cfg.ema_freeze_step,
    }
    if cfg.kind == "spidr":
        out.update(ema_timescale=cfg.ema_timescale, ema_threshold=cfg.ema_threshold)
    return out


def config_from_spidr_json(data: dict[str, Any], kind: str, where: str) -> DistillConfig:
    """Our config from the spidr package's model config fields (the inverse of
    spidr_config_dict; fields it does not set keep the base preset's values)."""
    names = {v: k for k, v in _SIMPLE.items()}
    overrides: dict[str, Any] = {}
    for key, value in data.items():
        if key in names:
            overrides[names[key]] = value
        elif key == "extractor_mode":
            overrides["conv_norm"] = "layer" if value == "layer_norm" else "group"
        elif key == "extractor_conv_layer_config":
            overrides["conv_channels"] = tuple(c for c, _, _ in value)
            overrides["conv_kernels"] = tuple(k for _, k, _ in value)
            overrides["conv_strides"] = tuple(s for _, _, s in value)
        elif key not in ("encoder_pos_conv_kernel", "ema_exclude_layers"):
            log.warning("%s: spidr config key %r not used", where, key)
    depth = data.get("encoder_pos_conv_depth", 5)
    overrides["pos_conv_kernel"] = max(3, data.get("encoder_pos_conv_kernel", 95) // depth)
    return DistillConfig.preset(kind, "base", **overrides)


_SIMPLE = {
    "conv_bias": "extractor_conv_bias",
    "hidden_dim": "encoder_embed_dim",
    "input_dropout": "encoder_projection_dropout",
    "pos_conv_groups": "encoder_pos_conv_groups",
    "pos_conv_layers": "encoder_pos_conv_depth",
    "num_layers": "encoder_num_layers",
    "num_heads": "encoder_num_heads",
    "attention_dropout": "encoder_attention_dropout",
    "ffn_dim": "encoder_ff_interm_features",
    "activation_dropout": "encoder_ff_interm_dropout",
    "dropout": "encoder_dropout",
    "pre_ln": "encoder_layer_norm_first",
    "layerdrop": "encoder_layer_drop",
    "qkv_bias": "encoder_qkv_bias",
    "codebook_size": "codebook_size",
    "codebook_decay": "codebook_decay",
    "num_codebooks": "num_codebooks",
    "ema_start_decay": "ema_start_decay",
    "ema_final_decay": "ema_final_decay",
    "ema_final_step": "ema_final_step",
    "ema_freeze_step": "freeze_step",
    "ema_timescale": "ema_timescale",
    "ema_threshold": "ema_threshold",
}


def export_spidr(model: DistillModel, out: str | Path) -> Path:
    """Write `out` (a .pt file; a folder gets <kind>.pt) holding {"model": the state dict with
    the spidr package's keys} and config.json beside it ({"model": its config fields}), which
    spidr.models.build_model(model_type=..., checkpoint=...) loads."""
    out = Path(out)
    if out.suffix != ".pt":
        out = out / f"{model.cfg.kind}.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = out.with_name(out.name + ".tmp")
    torch.save({"model": ours_to_spidr(state)}, tmp)
    tmp.replace(out)
    atomic_write_json(
        out.parent / "config.json",
        {"model_type": model.cfg.kind, "model": spidr_config_dict(model.cfg)},
    )
    return out


def hubertlab_config(model: DistillModel) -> dict[str, Any]:
    """What save_pretrained writes to config.json for a DistillModel."""
    return {"format": "hubertlab", "model_kind": model.cfg.kind, "model_config": to_dict(model.cfg)}
