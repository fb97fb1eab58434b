"""Validation loss and masked / unmasked accuracy, during training or over saved checkpoints."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from hubertlab.fileio import atomic_open
from hubertlab.train.checkpoint import list_checkpoints, load_checkpoint
from hubertlab.train.config import TrainConfig
from hubertlab.train.launch import DistInfo, all_reduce_sum

log = logging.getLogger(__name__)

# Sums reduced across batches and ranks, in this order.
TOTALS = (
    "loss_sum",
    "num_masked",
    "num_unmasked",
    "correct_masked",
    "correct_unmasked",
    "feature_penalty",
    "num_batches",
)


def model_forward(
    model: torch.nn.Module,
    batch: dict[str, Any],
    device: torch.device,
    *,
    bf16: bool,
    layerdrop_generator: torch.Generator | None = None,
) -> Any:
    """One forward pass on a collated batch; the mask is redrawn from the batch's seed."""
    waveforms = batch["waveforms"].to(device, non_blocking=True)
    lengths = batch["lengths"].to(device, non_blocking=True)
    labels = [lab.to(device, non_blocking=True) for lab in batch["labels"]]
    generator = torch.Generator().manual_seed(batch["mask_seed"])
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        return model(
            waveforms, lengths, labels, generator=generator, layerdrop_generator=layerdrop_generator
        )


def output_totals(out: Any) -> list[float]:
    """The TOTALS of one forward output, as floats (one device sync)."""
    values = (
        torch.stack(
            [
                out.loss_sum.detach().float(),
                out.num_masked.float(),
                out.num_unmasked.float(),
                out.correct_masked.float(),
                out.correct_unmasked.float(),
                out.feature_penalty.detach().float(),
            ]
        )
        .cpu()
        .tolist()
    )
    return values + [1.0]


def summarize(totals: list[float], *, feature_penalty_weight: float, num_unit_sets: int) -> dict:
    """Loss as the training loop defines it, and accuracies per frame and unit set."""
    t = dict(zip(TOTALS, totals, strict=True))
    masked = max(t["num_masked"], 1.0)
    unmasked = max(t["num_unmasked"], 1.0)
    batches = max(t["num_batches"], 1.0)
    return {
        "loss": t["loss_sum"] / masked + feature_penalty_weight * t["feature_penalty"] / batches,
        "masked_acc": t["correct_masked"] / (masked * num_unit_sets),
        "unmasked_acc": t["correct_unmasked"] / (unmasked * num_unit_sets),
        "feature_penalty": t["feature_penalty"] / batches,
        "num_masked": int(t["num_masked"]),
    }


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    batches: Iterable[dict[str, Any]],
    *,
    model_cfg: Any,
    device: torch.device,
    bf16: bool,
    dist_info: DistInfo | None = None,
) -> dict[str, float]:
    """Metrics over all validation batches (all ranks together); dropout and layerdrop off."""
    was_training = model.training
    model.eval()
    totals = torch.zeros(len(TOTALS), dtype=torch.float64)
    for batch in batches:
        if batch["size"] == 0:
            continue
        values = output_totals(model_forward(model, batch, device, bf16=bf16))
        if batch.get("count", True):
            totals += torch.tensor(values, dtype=torch.float64)
    model.train(was_training)
    if dist_info is not None:
        totals = all_reduce_sum(totals, dist_info)
    return summarize(
        totals.tolist(),
        feature_penalty_weight=model_cfg.feature_penalty_weight,
        num_unit_sets=len(model_cfg.num_units),
    )


def model_from_checkpoint(path: str | Path) -> torch.nn.Module:
    """A HubertModel from one of our training checkpoints (weights_only load)."""
    from hubertlab.models.config import HubertConfig
    from hubertlab.models.hubert import HubertModel

    state = load_checkpoint(path)
    if "model" not in state or "model_config" not in state:
        raise ValueError(f"{path}: not a hubertlab training checkpoint (no model/model_config)")
    model = HubertModel(HubertConfig.from_dict(state["model_config"], where=f"{path}:model_config"))
    model.load_state_dict(state["model"])
    return model


def validate_checkpoints(
    ckpt_dir: str | Path,
    cfg: TrainConfig,
    out_path: str | Path | None = None,
    *,
    device: torch.device | None = None,
) -> list[dict[str, Any]]:
    """Validate every step_*.pt in `ckpt_dir` (or its checkpoints/ folder) on the config's
    validation set; write one JSON line per checkpoint to `out_path` (default:
    ckpt_dir/validation.jsonl), the lowest loss marked "best": true."""
    from hubertlab.train.data import ValidBatches

    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        raise FileNotFoundError(f"checkpoint folder not found: {ckpt_dir}")
    if not list_checkpoints(ckpt_dir) and (ckpt_dir / "checkpoints").is_dir():
        ckpt_dir = ckpt_dir / "checkpoints"
    found = list_checkpoints(ckpt_dir)
    if not found:
        raise FileNotFoundError(f"{ckpt_dir}: no step_*.pt checkpoints")
    if cfg.data.valid_manifest is None:
        raise ValueError("data.valid_manifest: the config names no validation set")
    device = device or torch.device("cpu")
    bf16 = cfg.run.precision == "bf16"
    records: list[dict[str, Any]] = []
    batches = None
    for step, path in found:
        model = model_from_checkpoint(path).to(device)
        if batches is None:  # masks depend on the model's mask settings: build once
            batches = ValidBatches(
                cfg.data.valid_manifest, cfg.data.valid_units, cfg.data, model.cfg
            )
        metrics = evaluate(model, batches, model_cfg=model.cfg, device=device, bf16=bf16)
        records.append({"checkpoint": path.name, "step": step, **metrics})
        log.info("%s: loss %.4f masked acc %.3f", path.name, metrics["loss"], metrics["masked_acc"])
    best = min(range(len(records)), key=lambda i: records[i]["loss"])
    for i, record in enumerate(records):
        record["best"] = i == best
    out_path = Path(out_path) if out_path is not None else ckpt_dir / "validation.jsonl"
    with atomic_open(out_path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    return records
