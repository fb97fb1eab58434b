"""ABX learning curves: every saved checkpoint of a training run scored per layer, against the
MFCC + CMVN and raw MFCC baselines; a table (step x layer), JSON and a PNG.

Resumable: each scored checkpoint leaves OUT/steps/step_XXXXXXXX.json (written atomically)
with the checkpoint's identity (its bytes' hash, or size and mtime for a big file) and the
ABX settings; a rerun reuses it while both still match, so only new checkpoints are scored.
The baselines are kept the same way in OUT/baselines.json."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hubertlab.config import to_dict
from hubertlab.data.manifest import read_manifest
from hubertlab.evaluate.abx import AbxConfig, read_item_file
from hubertlab.evaluate.abx_sweep import (
    LayerScore,
    abx_of_features,
    abx_per_layer,
    mfcc_features,
    scores_from_json,
    scores_to_json,
)
from hubertlab.fileio import atomic_write_json, atomic_write_text, save_figure
from hubertlab.fingerprint import file_fingerprint
from hubertlab.train.checkpoint import list_checkpoints
from hubertlab.train.validate import model_from_checkpoint

logger = logging.getLogger(__name__)

CURVES_DIR = "abx_curve"  # a pipeline iteration's folder of them
STEPS_DIR = "steps"
BASELINES_FILE = "baselines.json"
CURVES_NAME = "abx_curves"  # abx_curves.json, .md, .png
# The strong baseline first (as the pipeline's baseline step orders them).
BASELINES = (("MFCC + CMVN", True), ("MFCC (raw)", False))
MODES = ("within", "across")


@dataclass(frozen=True)
class StepScores:
    """ABX of every scored layer of one checkpoint."""

    step: int
    checkpoint: str  # file name
    scores: tuple[LayerScore, ...]


def checkpoint_folder(run_dir: str | Path) -> Path:
    """The folder holding a run's step_*.pt: RUN_DIR/checkpoints (where training writes them)
    or RUN_DIR itself. Refuses a missing folder or one without checkpoints, naming it."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder not found: {run_dir}")
    for folder in (run_dir / "checkpoints", run_dir):
        if list_checkpoints(folder):
            return folder
    raise FileNotFoundError(
        f"{run_dir}: no step_*.pt checkpoints in it or in its checkpoints/ folder"
    )


def select_checkpoints(found: Sequence[tuple[int, Path]], every: int) -> list[tuple[int, Path]]:
    """Checkpoints whose step is a multiple of `every`, plus the last one."""
    if every < 1:
        raise ValueError(f"--every must be >= 1, got {every}")
    return [(s, p) for i, (s, p) in enumerate(found) if s % every == 0 or i == len(found) - 1]


def num_layers_of(path: Path) -> int:
    """Transformer layers of a training checkpoint's model, from its model_config (the file is
    memory-mapped: its weights are not read)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 - a damaged file makes torch raise anything
        raise ValueError(f"{path}: unreadable checkpoint (truncated or corrupt?): {e}") from None
    config = state.get("model_config") if isinstance(state, dict) else None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: not a hubertlab training checkpoint (no model_config)")
    backbone = config.get("backbone", config)  # nested, or flat as older checkpoints keep it
    if not isinstance(backbone, dict) or not isinstance(backbone.get("num_layers"), int):
        raise ValueError(f"{path}: its model has no transformer layers to score")
    return backbone["num_layers"]


def check_layer_counts(checkpoints: Sequence[tuple[int, Path]]) -> int:
    """The layer count all `checkpoints` share; refuses a run that mixes models."""
    first = checkpoints[0][1]
    count = num_layers_of(first)
    for _, path in checkpoints[1:]:
        other = num_layers_of(path)
        if other != count:
            raise ValueError(
                f"{path.parent}: checkpoints have different layer counts ({first.name}: "
                f"{count}, {path.name}: {other}); score each model's checkpoints separately"
            )
    return count


def load_checkpoint_model(path: Path) -> torch.nn.Module:
    """The model of a training checkpoint of any task (HuBERT, SpidR, DinoSR, fine-tuned)."""
    return model_from_checkpoint(path)


def abx_settings(
    manifest: str | Path,
    item_file: str | Path,
    config: AbxConfig,
    *,
    layers: Sequence[int] | None = None,
    intermediate: bool = False,
) -> dict[str, Any]:
    """What a score depends on besides the weights (the device does not count)."""
    abx = {k: v for k, v in to_dict(config).items() if k != "device"}
    settings = {
        "item_file": file_fingerprint(item_file),
        "manifest": file_fingerprint(manifest),
        "abx": abx,
        "layers": "all" if layers is None else sorted(set(layers)),
        "intermediate": intermediate,
    }
    return json.loads(json.dumps(settings))  # as it reads back from JSON (lists, not tuples)


def _read_saved(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        logger.warning("%s: unreadable (%s): scored again", path, e)
        return None


def score_checkpoints(
    checkpoints: Sequence[tuple[int, Path]],
    manifest: str | Path,
    item_file: str | Path,
    out_dir: str | Path,
    *,
    config: AbxConfig,
    layers: Sequence[int] | None = None,
    intermediate: bool = False,
) -> list[StepScores]:
    """ABX per layer of each checkpoint, those scored before with the same settings reused."""
    check_layer_counts(checkpoints)
    settings = abx_settings(manifest, item_file, config, layers=layers, intermediate=intermediate)
    loaded_manifest = None
    out: list[StepScores] = []
    for step, path in checkpoints:
        record_path = Path(out_dir) / STEPS_DIR / f"{path.stem}.json"
        identity = file_fingerprint(path)
        saved = _read_saved(record_path)
        if saved is not None and saved["identity"] == identity and saved["settings"] == settings:
            out.append(StepScores(step, path.name, tuple(scores_from_json(saved["scores"]))))
            continue
        if saved is not None:
            logger.info("%s: checkpoint or ABX settings changed since scored: scored again", path)
        loaded_manifest = loaded_manifest or read_manifest(manifest)
        scores = abx_per_layer(
            load_checkpoint_model(path),
            loaded_manifest,
            item_file,
            layers=layers,
            config=config,
            source=str(path),
            intermediate=intermediate,
        )
        atomic_write_json(
            record_path,
            {
                "checkpoint": path.name,
                "step": step,
                "identity": identity,
                "settings": settings,
                "scores": scores_to_json(scores),
            },
        )
        logger.info("ABX of %s: saved %s", path.name, record_path)
        out.append(StepScores(step, path.name, tuple(scores)))
    return out


def score_baselines(
    manifest: str | Path, item_file: str | Path, out_dir: str | Path, config: AbxConfig
) -> list[LayerScore]:
    """ABX of MFCC with and without per-utterance CMVN (10 ms frames), kept in
    OUT/baselines.json and reused while the settings match."""
    config = dataclasses.replace(config, frame_shift_s=0.01)
    settings = abx_settings(manifest, item_file, config)
    path = Path(out_dir) / BASELINES_FILE
    saved = _read_saved(path)
    if saved is not None and saved["settings"] == settings:
        return scores_from_json(saved["scores"])
    rows = read_manifest(manifest)
    fileids = {t.fileid for t in read_item_file(item_file)}
    scores = [
        abx_of_features(mfcc_features(rows, fileids, item_file, cmvn=cmvn), item_file, config, name)
        for name, cmvn in BASELINES
    ]
    atomic_write_json(path, {"settings": settings, "scores": scores_to_json(scores)})
    return scores


def _value(score: LayerScore, mode: str) -> float | None:
    return score.within if mode == "within" else score.across


def curves_report(
    steps: Sequence[StepScores], baselines: Sequence[LayerScore], *, source: dict[str, Any]
) -> dict[str, Any]:
    """All the numbers, as abx_curves.json keeps them; `best` is the (step, layer) with the
    lowest mean of the computed speaker modes."""
    best_step, best = min(
        ((s, score) for s in steps for score in s.scores), key=lambda pair: pair[1].mean_error
    )
    return {
        "source": source,
        "steps": [
            {"step": s.step, "checkpoint": s.checkpoint, "scores": scores_to_json(s.scores)}
            for s in steps
        ],
        "baselines": scores_to_json(baselines),
        "best": {
            "step": best_step.step,
            "layer": best.layer,
            "within": best.within,
            "across": best.across,
        },  # fmt: skip
    }


def format_curves_table(steps: Sequence[StepScores], baselines: Sequence[LayerScore]) -> str:
    """Markdown: per speaker mode, one row per step and one column per layer (each row's best
    in bold), then the baselines."""
    layers = [score.layer for score in steps[0].scores]
    lines: list[str] = []
    for mode in MODES:
        rows = [[_value(score, mode) for score in s.scores] for s in steps]
        if all(v is None for row in rows for v in row):
            continue
        lines += [f"## {mode}-speaker ABX error (%)", ""]
        lines += ["| step | " + " | ".join(f"layer {layer}" for layer in layers) + " |"]
        lines += ["|---|" + "---|" * len(layers)]
        for s, row in zip(steps, rows, strict=True):
            low = min((v for v in row if v is not None), default=None)
            cells = ["-" if v is None else f"**{v:.2f}**" if v == low else f"{v:.2f}" for v in row]
            lines.append(f"| {s.step} | " + " | ".join(cells) + " |")
        marks = [f"{b.name} {_value(b, mode):.2f}" for b in baselines if mode in b.results]
        lines += ["", "Baselines: " + ", ".join(marks) + "." if marks else "", ""]
    return "\n".join(lines).rstrip() + "\n"


def plot_curves(
    steps: Sequence[StepScores], baselines: Sequence[LayerScore], path: str | Path
) -> bool:
    """ABX against training step, one line per layer, one panel per speaker mode, the
    baselines as flat dashed lines. False (and nothing written) without matplotlib."""
    try:
        import matplotlib  # lazy: slow to import; only the figure needs it
    except ImportError:
        logger.warning("matplotlib not installed: %s not drawn (pip install matplotlib)", path)
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: after matplotlib.use("Agg")
    from matplotlib.ticker import MaxNLocator  # lazy: matplotlib, as above

    modes = [m for m in MODES if any(m in score.results for s in steps for score in s.scores)]
    fig, axes = plt.subplots(1, len(modes), figsize=(5.5 * len(modes), 4), squeeze=False)
    x = [s.step for s in steps]
    for ax, mode in zip(axes[0], modes, strict=True):
        for i, layer in enumerate(score.layer for score in steps[0].scores):
            y = [_value(s.scores[i], mode) for s in steps]
            ax.plot(x, [np.nan if v is None else v for v in y], "o-", ms=3, label=f"layer {layer}")
        for b, color in zip(baselines, ("k", "0.5"), strict=False):
            if mode in b.results:
                ax.axhline(_value(b, mode), color=color, ls="--", lw=1, label=b.name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel="training step", ylabel="ABX error (%)", title=f"{mode}-speaker ABX")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return True


def write_curves(
    out_dir: str | Path,
    steps: Sequence[StepScores],
    baselines: Sequence[LayerScore],
    *,
    source: dict[str, Any],
) -> dict[str, Any]:
    """abx_curves.json, .md and .png in `out_dir`; returns the JSON's content."""
    out_dir = Path(out_dir)
    report = curves_report(steps, baselines, source=source)
    atomic_write_json(out_dir / f"{CURVES_NAME}.json", report)
    atomic_write_text(out_dir / f"{CURVES_NAME}.md", format_curves_table(steps, baselines))
    plot_curves(steps, baselines, out_dir / f"{CURVES_NAME}.png")
    return report


def abx_curves(
    run_dir: str | Path,
    manifest: str | Path,
    item_file: str | Path,
    out_dir: str | Path,
    *,
    config: AbxConfig,
    layers: Sequence[int] | None = None,
    every: int = 1,
    intermediate: bool = False,
    baselines: Sequence[LayerScore] | None = None,
) -> dict[str, Any]:
    """Score the run's checkpoints (every `every` steps, plus the last) and the baselines
    (unless given), then write the table, JSON and PNG into `out_dir`."""
    if every < 1:
        raise ValueError(f"--every must be >= 1, got {every}")
    folder = checkpoint_folder(run_dir)
    checkpoints = select_checkpoints(list_checkpoints(folder), every)
    steps = score_checkpoints(
        checkpoints,
        manifest,
        item_file,
        out_dir,
        config=config,
        layers=layers,
        intermediate=intermediate,
    )
    if baselines is None:
        baselines = score_baselines(manifest, item_file, out_dir, config)
    source = {"run": str(run_dir), "checkpoints": str(folder), "every": every}
    source.update(manifest=str(manifest), item_file=str(item_file), intermediate=intermediate)
    return write_curves(out_dir, steps, baselines, source=source)


def summary_table(report: dict[str, Any]) -> list[str]:
    """Short markdown lines of an abx_curves.json: each step's best layer, then the baselines
    (what the pipeline report shows beside the loss curve)."""
    lines = ["| step | best layer | within % | across % |", "|---|---|---|---|"]

    def cell(entry: dict[str, Any], mode: str) -> str:
        return f"{entry[mode]['error_percent']:.2f}" if mode in entry else "-"

    for s in scores_of_steps(report):
        best = min(s.scores, key=lambda score: score.mean_error)
        row = scores_to_json([best])[0]
        lines.append(f"| {s.step} | {best.layer} | {cell(row, 'within')} | {cell(row, 'across')} |")
    for b in report["baselines"]:
        lines.append(f"| {b['name']} (baseline) | | {cell(b, 'within')} | {cell(b, 'across')} |")
    return lines


def scores_of_steps(report: dict[str, Any]) -> list[StepScores]:
    """The StepScores of an abx_curves.json."""
    return [
        StepScores(s["step"], s["checkpoint"], tuple(scores_from_json(s["scores"])))
        for s in report["steps"]
    ]
