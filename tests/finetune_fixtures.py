"""A tiny pretrained encoder, a tiny VTC corpus and configs for the fine-tuning tests."""

from __future__ import annotations

from pathlib import Path

import torch

from hubertlab.models.checkpoint import save_pretrained
from hubertlab.models.config import HubertConfig
from hubertlab.models.hubert import HubertModel
from tests.train_fixtures import TINY_OVERRIDES

# The backbone fields of the tests' tiny model (the same as the pretraining tests').
TINY_BACKBONE = {k: v for k, v in TINY_OVERRIDES.items() if k != "final_dim"}


def tiny_encoder(folder: Path, seed: int = 0) -> Path:
    """A randomly initialised tiny HuBERT saved as a pretrained folder (model.safetensors)."""
    torch.manual_seed(seed)
    cfg = HubertConfig.preset("tiny", **TINY_OVERRIDES, num_units=(8,))
    return save_pretrained(HubertModel(cfg), folder)


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | Path):
        return f'"{value}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    return repr(value)


def write_toml(path: Path, tables: dict[str, dict]) -> Path:
    lines = []
    for table, values in tables.items():
        lines.append(f"[{table}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def vtc_tables(corpus: Path, encoder, out_dir: Path, **sections: dict) -> dict[str, dict]:
    tables = {
        "finetune": {"task": "vtc", "encoder": str(encoder), "layer": "weighted"},
        "data": {
            "train_manifest": corpus / "train" / "manifest.csv",
            "dev_manifest": corpus / "dev" / "manifest.csv",
            "train_rttm": corpus / "train" / "reference.rttm",
            "dev_rttm": corpus / "dev" / "reference.rttm",
            "train_uem": corpus / "train" / "all.uem",
            "dev_uem": corpus / "dev" / "all.uem",
            "window_seconds": 2.0,
            "batch_size": 4,
            "num_workers": 0,
        },
        "optim": {"lr": 1e-3, "warmup_steps": 2, "max_steps": 12, "schedule": "constant"},
        "run": {
            "out_dir": out_dir,
            "precision": "fp32",
            "log_every": 2,
            "ckpt_every": 4,
            "valid_every": 6,
            "progress_bar": False,
            "num_threads": 1,
            "seed": 3,
        },
    }
    for name, values in sections.items():
        tables[name] = {**tables.get(name, {}), **values}
    return tables
