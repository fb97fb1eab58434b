"""Tiny synthetic corpora and configs for the dataset / training tests (no downloads)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hubertlab.constants import FRAME_HOP, num_frames
from hubertlab.data.audio import write_audio
from hubertlab.data.manifest import ManifestRow, write_manifest

NUM_UNITS = 8

# A model small enough for 20 CPU steps in a second or two.
TINY_OVERRIDES = {
    "conv_channels": [16] * 7,
    "hidden_dim": 32,
    "num_layers": 2,
    "num_heads": 2,
    "ffn_dim": 64,
    "final_dim": 16,
    "pos_conv_kernel": 16,
    "pos_conv_groups": 4,
}


def make_corpus(
    root: Path,
    seconds: list[float],
    *,
    name: str = "train",
    seed: int = 0,
    corrupt: tuple[int, ...] = (),
) -> tuple[Path, Path]:
    """Write wavs, a CSV manifest and a units JSONL where unit = frame index mod NUM_UNITS, and
    the audio of frame k carries a tone of frequency (1 + unit) * 200 Hz (learnable and
    checkable). Files listed in `corrupt` are replaced by garbage after the manifest is made."""
    rng = np.random.default_rng(seed)
    folder = root / name
    rows, unit_rows = [], []
    for i, sec in enumerate(seconds):
        n = int(sec * 16000)
        frames = num_frames(n)
        units = np.arange(frames) % NUM_UNITS
        t = np.arange(n) / 16000
        freq = np.repeat((1 + units) * 200.0, FRAME_HOP)
        freq = np.concatenate([freq, np.full(max(0, n - len(freq)), freq[-1])])[:n]
        wav = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(n)
        fileid = f"spk{i % 2}/utt{i:03d}"
        path = folder / "wav" / f"{fileid}.wav"
        write_audio(path, wav.astype(np.float32))
        rows.append(ManifestRow(fileid=fileid, path=f"wav/{fileid}.wav", num_samples=n))
        unit_rows.append({"fileid": fileid, "units": units.tolist()})
    manifest = folder / "manifest.csv"
    write_manifest(rows, manifest)
    units_path = folder / "units.jsonl"
    units_path.write_text("".join(json.dumps(r) + "\n" for r in unit_rows))
    for i in corrupt:
        (folder / rows[i].path).write_bytes(b"RIFF\x10\x00\x00\x00WAVEgarbage" * 10)
    return manifest, units_path


def write_config(
    path: Path,
    train: tuple[Path, Path],
    out_dir: Path,
    *,
    valid: tuple[Path, Path] | None = None,
    **sections: dict,
) -> Path:
    """A TOML config for the tiny model; `sections` add or replace keys, e.g. run={...}."""
    tables = {
        "model": {"preset": "tiny"},
        "model.overrides": dict(TINY_OVERRIDES),
        "data": {
            "train_manifest": str(train[0]),
            "train_units": [str(train[1])],
            "num_units": [NUM_UNITS],
            **CROPS,
        },
        **optim_and_run(out_dir),
    }
    if valid is not None:
        tables["data"].update(valid_manifest=str(valid[0]), valid_units=[str(valid[1])])
    return write_tables(path, tables, **sections)


# Short crops in small batches, read in the test process.
CROPS = {"min_crop_seconds": 0.5, "max_crop_seconds": 1.0, "batch_seconds": 2.0, "num_workers": 0}


def optim_and_run(out_dir: Path) -> dict[str, dict]:
    """The [optim] and [run] tables of the test configs: 20 quick fp32 steps, one thread."""
    return {
        "optim": {"lr": 2e-3, "warmup_steps": 5, "max_steps": 20},
        "run": {
            "out_dir": str(out_dir),
            "precision": "fp32",
            "log_every": 5,
            "ckpt_every": 10,
            "valid_every": 0,
            "progress_bar": False,
            "num_threads": 1,
        },
    }


def write_tables(path: Path, tables: dict[str, dict], **sections: dict) -> Path:
    """Write `tables` as TOML after `sections` (model__overrides= for [model.overrides]) add
    or replace their keys."""
    for name, values in sections.items():
        tables[name.replace("__", ".")].update(values)
    lines = []
    for name, values in tables.items():
        lines += [f"[{name}]", *(f"{k} = {json.dumps(v)}" for k, v in values.items()), ""]
    path.write_text("\n".join(lines))
    return path
