"""Save and load HuBERT weights in our format and read everyone else's.

Our pretrained dir: model.safetensors + config.json ({"format": "hubertlab", "model_config": ...}).
Our training checkpoint: torch.save({"model": state_dict, "model_config": to_dict(cfg), ...}).
Also read: transformers HubertModel dirs, torchaudio state dicts, fairseq checkpoints.

Pickles are read through hubertlab.models.safe_load (never plain pickle). `from_pretrained`
also reads SpidR/DinoSR models, through hubertlab.models.spidr_io.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from hubertlab.config import to_dict
from hubertlab.fileio import atomic_write_json, give_umask_permissions
from hubertlab.models import convert, spidr_io
from hubertlab.models.config import HubertConfig, replace_fields
from hubertlab.models.hubert import HEAD_PREFIXES, HubertModel
from hubertlab.models.safe_load import CheckpointError, plain, safe_load

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FINETUNE_KINDS = ("vtc", "ctc")  # model_kind of a fine-tuning checkpoint (encoder + head)


def save_pretrained(model: torch.nn.Module, out_dir: str | Path) -> Path:
    """Write model.safetensors and config.json (head included) to `out_dir`; config.json
    records the model kind ("hubert", "spidr", "dinosr") and its config."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = out_dir / (WEIGHTS_NAME + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt"})
    give_umask_permissions(tmp)  # safetensors writes 0600
    tmp.replace(out_dir / WEIGHTS_NAME)
    kind = getattr(model.cfg, "kind", "hubert")
    atomic_write_json(
        out_dir / CONFIG_NAME,
        {"format": "hubertlab", "model_kind": kind, "model_config": to_dict(model.cfg)},
    )
    return out_dir


def training_checkpoint(model: HubertModel, **extra: Any) -> dict[str, Any]:
    """The dict the training loop torch.saves: model weights, model config, and `extra`."""
    return {"model": model.state_dict(), "model_config": to_dict(model.cfg), **extra}


def from_pretrained(
    path: str | Path, *, keep_head: bool = True, **overrides: Any
) -> torch.nn.Module:
    """Load a HubertModel from our dir or training checkpoint, a transformers dir, a torchaudio
    state dict or a fairseq checkpoint. `overrides` replace config fields (e.g. dropouts, or
    `num_units` for a new head). The head is dropped (freshly initialised) when `keep_head` is
    False, when the source has none, or when `overrides` change its shape.

    SpidR/DinoSR (our dirs and checkpoints, the spidr package's files) load as a whole
    DistillModel (teacher and codebooks included; `keep_head` does not apply)."""
    # A checkpoint file is read once (a fairseq base .pt is ~1 GB): the kind test and the
    # reader share it.
    file = Path(path)
    loaded = safe_load(file) if file.is_file() and file.suffix != ".safetensors" else None
    if spidr_io.distill_kind(path, loaded=loaded) is not None:
        return spidr_io.load_distill(path, loaded=loaded, **overrides)
    cfg, state = read_checkpoint(path, num_units=overrides.get("num_units"), loaded=loaded)
    return build_model(cfg, state, keep_head=keep_head, where=str(path), **overrides)


def build_model(
    cfg: HubertConfig,
    state: dict[str, torch.Tensor],
    *,
    keep_head: bool = True,
    where: str = "checkpoint",
    **overrides: Any,
) -> HubertModel:
    """A HubertModel from a config and our-layout state dict (backbone keys must all match)."""
    if overrides:
        cfg = replace_fields(cfg, overrides)
    model = HubertModel(cfg)
    expected = model.state_dict()
    head = {k: v for k, v in state.items() if k.startswith(HEAD_PREFIXES)}
    head_fits = (
        keep_head
        and bool(head)
        and set(head) == {k for k in expected if k.startswith(HEAD_PREFIXES)}
        and all(head[k].shape == expected[k].shape for k in head)
    )
    if head and keep_head and not head_fits:
        logger.info(
            "%s: head does not fit the config (num_units %s): left untrained", where, cfg.num_units
        )
    backbone = {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIXES)}
    if "mask_embedding" not in backbone:  # transformers drops it when mask_time_prob == 0
        backbone["mask_embedding"] = expected["mask_embedding"]
    wanted = {k for k in expected if not k.startswith(HEAD_PREFIXES)}
    missing, unexpected = sorted(wanted - set(backbone)), sorted(set(backbone) - wanted)
    if missing or unexpected:
        raise CheckpointError(
            f"{where}: keys do not match the model: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}"
        )
    for k, v in backbone.items():
        if v.shape != expected[k].shape:
            raise CheckpointError(
                f"{where}: {k} has shape {tuple(v.shape)}, model expects {tuple(expected[k].shape)}"
            )
    model.load_state_dict({**backbone, **(head if head_fits else {})}, strict=False)
    return model


def read_checkpoint(
    path: str | Path, *, num_units: tuple[int, ...] | None = None, loaded: Any = None
) -> tuple[HubertConfig, dict[str, torch.Tensor]]:
    """(config, our-layout state dict) of any supported checkpoint. `num_units` tells how a
    fairseq checkpoint with several label sets splits its concatenated unit table; `loaded` is
    the file's object when the caller has read it already."""
    path = Path(path)
    if path.is_dir():
        return _read_dir(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return _read_dir(path.parent)
    obj = safe_load(path) if loaded is None else loaded
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict, got {type(obj).__name__}")
    if obj.get("model_kind") in FINETUNE_KINDS:
        raise _finetuned_error(path, obj)
    if "model_config" in obj and "model" in obj:
        cfg = HubertConfig.from_dict(obj["model_config"], where=f"{path}:model_config")
        return cfg, convert.legacy_to_ours(dict(obj["model"]))
    if "model" in obj and ("args" in obj or "cfg" in obj):
        return _read_fairseq(path, obj, num_units)
    state = obj.get("state_dict", obj)  # Lightning wraps the weights in "state_dict"
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: not a state dict, our checkpoint or fairseq checkpoint")
    ours = convert.torchaudio_to_ours(state)
    return convert.infer_config(ours), ours


def _finetuned_error(path: Path, obj: dict[str, Any]) -> CheckpointError:
    """What to do with a fine-tuning checkpoint given where a pretrained model is read (its
    model_config describes an encoder and a head, not a HubertModel)."""
    kind = obj["model_kind"]
    train_config = obj.get("train_config")
    encoder = None
    if isinstance(train_config, dict) and isinstance(train_config.get("finetune"), dict):
        encoder = train_config["finetune"].get("encoder")
    start = f"the encoder it was fine-tuned from ({encoder})" if encoder else "its encoder"
    use = "`hubertlab predict` (RTTM)" if kind == "vtc" else "`hubertlab predict` (transcripts)"
    return CheckpointError(
        f"{path}: a fine-tuning checkpoint ({kind}), not a pretrained model: give {start}, or "
        f"run {use} with this one"
    )


def _read_dir(path: Path) -> tuple[HubertConfig, dict[str, torch.Tensor]]:
    config_path = path / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"{path}: no {CONFIG_NAME}")
    config = json.loads(config_path.read_text())
    if (path / WEIGHTS_NAME).is_file():
        state = load_file(str(path / WEIGHTS_NAME))
    elif (path / "pytorch_model.bin").is_file():
        state = safe_load(path / "pytorch_model.bin")
    else:
        raise FileNotFoundError(f"{path}: neither {WEIGHTS_NAME} nor pytorch_model.bin")
    if config.get("format") == "hubertlab":
        cfg = HubertConfig.from_dict(config["model_config"], where=str(config_path))
        return cfg, convert.legacy_to_ours(state)
    if config.get("model_type") == "hubert":
        fields = convert.hf_config_fields(config)
        return HubertConfig.from_dict(fields, where=str(config_path)), convert.hf_to_ours(state)
    raise CheckpointError(f"{config_path}: neither a hubertlab nor a transformers HuBERT config")


def _read_fairseq(
    path: Path, obj: dict[str, Any], num_units: tuple[int, ...] | None
) -> tuple[HubertConfig, dict[str, torch.Tensor]]:
    args = plain(obj.get("args")) or {}
    if not args and obj.get("cfg") is not None:
        args = (plain(obj["cfg"]) or {}).get("model") or {}
    if not isinstance(args, dict):
        args = {}
    fields = convert.fairseq_config_fields(args)
    state = dict(obj["model"])
    table = state.get("label_embs_concat")
    if table is not None:
        num_units = _fairseq_num_units(path, args, table.shape[0], num_units)
    if table is None or num_units is None:
        state = {k: v for k, v in state.items() if not k.startswith(("label_embs", "final_proj"))}
    ours = convert.fairseq_to_ours(state, num_units)
    return convert.infer_config(ours, **fields), ours


def _fairseq_num_units(
    path: Path, args: dict[str, Any], rows: int, num_units: tuple[int, ...] | None
) -> tuple[int, ...] | None:
    """Unit-set sizes of a fairseq head (None: drop the head). The dictionaries are not in the
    checkpoint, so with several label sets (args.labels) the caller must pass num_units."""
    special = convert.FAIRSEQ_SPECIAL_ROWS
    num_sets = len(args.get("labels") or [None])
    if num_units is not None:
        if sum(num_units) + special * len(num_units) == rows:
            return tuple(num_units)
        logger.info(
            "%s: num_units %s do not split the %d-row unit table: head dropped",
            path,
            list(num_units),
            rows,
        )
        return None
    if num_sets > 1:
        raise CheckpointError(
            f"{path}: {num_sets} label sets share a {rows}-row unit table; pass num_units=(...) "
            f"(each set has {special} extra special rows)"
        )
    return (rows - special,)


def export_transformers(model: HubertModel, out_dir: str | Path) -> Path:
    """Write a dir that transformers.HubertModel.from_pretrained loads (backbone only)."""
    try:  # lazy: transformers is a heavy optional extra, only this export needs it
        import transformers
    except ImportError as e:
        raise ImportError("exporting to transformers needs `pip install hubertlab[interop]`") from e
    hf = transformers.HubertModel(transformers.HubertConfig(**convert.hf_config_dict(model.cfg)))
    state = convert.ours_to_hf(model.state_dict())
    missing, unexpected = hf.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"transformers export: missing {missing}, unexpected {unexpected}")
    hf.save_pretrained(str(out_dir))
    give_weights_umask_permissions(out_dir)
    return Path(out_dir)


def give_weights_umask_permissions(out_dir: str | Path) -> None:
    """The umask's permissions for the *.safetensors that transformers' save_pretrained wrote
    into `out_dir` (safetensors writes them 0600: teammates could not read an export)."""
    for path in Path(out_dir).glob("*.safetensors"):
        give_umask_permissions(path)
