"""ABX of every layer of a checkpoint (one forward pass per file), of MFCC, or of saved
features; a table, a plot and the best layer as JSON, to pick checkpoints and the layer that
the next iteration clusters."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hubertlab.config import to_dict
from hubertlab.constants import LABEL_RATE_HZ, num_frames
from hubertlab.data.manifest import Manifest
from hubertlab.evaluate.abx import (
    AbxConfig,
    AbxPlan,
    AbxResult,
    abx_scores,
    gc_paused,
    prepare_abx,
    read_item_file,
    score_plan,
)
from hubertlab.evaluate.frame_checks import check_finite, check_frame_counts, check_frame_shift
from hubertlab.features.cmvn import utterance_cmvn
from hubertlab.features.store import STORE_META, FeatureStore
from hubertlab.fileio import atomic_write_json, atomic_write_text, save_figure
from hubertlab.models.mfcc import mfcc_of_waveform

logger = logging.getLogger(__name__)

BEST_CRITERION = "lowest mean of the within- and across-speaker errors"
# What a folder of .npy arrays is taken to hold when nothing says otherwise: HuBERT layers.
DEFAULT_FRAME_SHIFT_S = 1.0 / LABEL_RATE_HZ


@dataclass(frozen=True)
class LayerScore:
    """ABX of one feature source: a layer of a model (`layer`), or MFCC / saved features."""

    name: str
    layer: int | None
    results: Mapping[str, AbxResult]

    @property
    def within(self) -> float | None:
        """Within-speaker error in percent (None if not computed)."""
        result = self.results.get("within")
        return None if result is None else result.error_percent

    @property
    def across(self) -> float | None:
        result = self.results.get("across")
        return None if result is None else result.error_percent

    @property
    def mean_error(self) -> float:
        return float(np.mean([r.error_percent for r in self.results.values()]))


def manifest_rows_for(manifest: Manifest, fileids: set[str], item_file: str | Path) -> list:
    """The manifest rows of the item file's files; the error names the files it lacks."""
    rows = [row for row in manifest if row.fileid in fileids]
    if len(rows) < len(fileids):
        missing = sorted(fileids - {row.fileid for row in rows})
        raise ValueError(
            f"{manifest.source or 'manifest'}: no row for {len(missing)} file(s) of "
            f"{item_file}, e.g. {missing[0]!r}"
        )
    return rows


@torch.inference_mode()
def abx_per_layer(
    model: torch.nn.Module,
    manifest: Manifest,
    item_file: str | Path,
    *,
    layers: Sequence[int] | None = None,
    config: AbxConfig | None = None,
    source: str = "model",
    intermediate: bool = False,
    cmvn: bool = False,
) -> list[LayerScore]:
    """ABX of the given transformer layers (default: all, 1..L; 0 is the transformer input).
    With `intermediate` (SpidR/DinoSR models), each layer's intermediate output (feed-forward
    output before the residual add) is scored instead of its hidden state. With `cmvn`, each
    layer's frames are normalised per utterance as the MFCC + CMVN baseline's are.

    Each file of the item file goes through the model once; only the token frames of each
    layer are kept, so memory is ~ (token frames) x dim x 4 bytes per layer. `source` (e.g.
    the checkpoint path) names the model in errors: NaN or inf hidden states, a frame shift
    other than the model's 20 ms.
    """
    config = config or AbxConfig(frame_shift_s=1.0 / LABEL_RATE_HZ)
    check_frame_shift(config.frame_shift_s, LABEL_RATE_HZ, f"{source} (its CNN hops 20 ms)")
    # SpidR/DinoSR expect audio standardised per utterance (by the data path, not the model).
    standardize = getattr(model, "expects_standardized_audio", False)
    if intermediate and not hasattr(model, "intermediate_outputs"):
        raise ValueError(f"{source}: intermediate outputs need a SpidR/DinoSR model")
    whole = model
    model = getattr(model, "backbone", model)  # a whole model, or its Backbone
    num_layers = model.cfg.num_layers
    layers = list(range(1, num_layers + 1)) if layers is None else sorted(set(layers))
    lowest = 1 if intermediate else 0
    if not layers or any(not lowest <= layer <= num_layers for layer in layers):
        raise ValueError(f"layers must lie in [{lowest}, {num_layers}], got {layers}")
    with gc_paused():
        tokens = read_item_file(item_file)
        rows = manifest_rows_for(manifest, {t.fileid for t in tokens}, item_file)
        expected = {row.fileid: num_frames(row.num_samples) for row in rows}
        plan = prepare_abx(tokens, expected, config, item_file=str(item_file))
    device = torch.device(config.device)
    model = model.to(device).eval()
    if intermediate:
        whole = whole.to(device).eval()
    buffers: dict[int, torch.Tensor] = {}
    for row in rows:
        if row.fileid not in plan.by_file:
            continue
        wav = row.read_audio(manifest.root, standardize=standardize)
        wav = torch.from_numpy(wav).to(device)[None]  # (1, samples)
        if intermediate:
            outputs, frame_lengths = whole.intermediate_outputs(wav)
            hidden = [None, *outputs]  # hidden[L]: layer L, as extract_features numbers them
        else:
            hidden, frame_lengths = model.extract_features(wav, output_layer=max(layers))
        if int(frame_lengths[0]) != expected[row.fileid]:
            raise ValueError(
                f"{manifest.source}: {row.fileid!r} gave {int(frame_lengths[0])} frames, "
                f"expected {expected[row.fileid]} from num_samples={row.num_samples}"
            )
        for layer in layers:
            frames = hidden[layer][0].float()  # (frames, dim)
            check_finite(frames, row.fileid, f"{source}, layer {layer}")
            if cmvn:
                frames = torch.from_numpy(utterance_cmvn(frames.cpu().numpy())).to(device)
            if layer not in buffers:
                buffers[layer] = frames.new_empty(plan.total_frames, frames.shape[1])
            _fill(buffers[layer], plan, row.fileid, frames)
    scores = []
    for layer in layers:
        results = score_plan(plan, buffers.pop(layer), config)
        scores.append(LayerScore(f"layer {layer}", layer, results))
        logger.info("ABX layer %d: %s", layer, _describe(results))
    return scores


def _fill(buffer: torch.Tensor, plan: AbxPlan, fileid: str, frames: torch.Tensor) -> None:
    for pos, start, end in plan.by_file[fileid]:
        offset = int(plan.flat_offset[pos])
        buffer[offset : offset + end - start] = frames[start:end]


def _describe(results: Mapping[str, AbxResult]) -> str:
    return ", ".join(f"{m} {r.error_percent:.2f}%" for m, r in results.items())


def mfcc_features(
    manifest: Manifest,
    fileids: set[str] | None = None,
    item_file: str | Path = "item file",
    *,
    cmvn: bool = False,
) -> dict[str, np.ndarray]:
    """39-d MFCC (100 Hz) of the manifest's files (only `fileids`, which must all be there).
    With `cmvn`, each coefficient is normalised to zero mean and unit variance over each
    utterance's frames (cepstral mean and variance normalisation, the usual front end: the
    strong MFCC baseline, removing channel and speaker offsets)."""
    rows = list(manifest) if fileids is None else manifest_rows_for(manifest, fileids, item_file)
    out = {row.fileid: mfcc_of_waveform(row.read_audio(manifest.root)) for row in rows}
    if cmvn:
        out = {fileid: utterance_cmvn(frames) for fileid, frames in out.items()}
    return out


def load_feature_dir(
    folder: str | Path,
    fileids: set[str],
    *,
    frame_shift_s: float | None = None,
    manifest: Manifest | None = None,
) -> tuple[dict[str, np.ndarray], float]:
    """Saved features of `fileids`: a feature store (`hubertlab features`; memory-mapped) or a
    folder of <fileid>.npy arrays (frames, dim). Returns (features, frame shift in seconds).

    A store records its rate: `frame_shift_s` must agree with it (or be None). A .npy folder
    does not: it needs `frame_shift_s` or `manifest` (then the default is 0.02 s). With
    `manifest`, every frame count must match the audio's duration at that shift."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"feature folder not found: {folder}")
    if (folder / STORE_META).is_file():
        store = FeatureStore.open(folder)
        missing = sorted(f for f in fileids if f not in store)
        if missing:
            raise ValueError(
                f"{folder}: feature store has no features for {len(missing)} file(s) of the "
                f"item file, e.g. {missing[0]!r}"
            )
        features = {f: store[f] for f in fileids}
        where = f"feature store {folder} ({STORE_META} frame_rate_hz)"
        shift = check_frame_shift(frame_shift_s, store.frame_rate_hz, where)
    else:
        if frame_shift_s is None and manifest is None:
            raise ValueError(
                f"{folder}: .npy features record no frame rate: pass --frame-shift, or "
                f"--manifest to check the default {DEFAULT_FRAME_SHIFT_S:g} s against the audio"
            )
        features = _load_npy_folder(folder, fileids)
        shift = frame_shift_s or DEFAULT_FRAME_SHIFT_S
    if manifest is not None:
        rows = manifest_rows_for(manifest, fileids, "the features")
        check_frame_counts(
            {f: len(a) for f, a in features.items()},
            {row.fileid: row.num_samples for row in rows},
            shift,
            source=str(folder),
            audio=f"manifest {manifest.source or '(in memory)'}",
        )
    return features, shift


def _load_npy_folder(folder: Path, fileids: set[str]) -> dict[str, np.ndarray]:
    features, missing = {}, []
    for fileid in sorted(fileids):
        path = folder / f"{fileid}.npy"
        if path.is_file():
            features[fileid] = np.load(path, mmap_mode="r", allow_pickle=False)
        else:
            missing.append(str(path))
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} feature file(s) missing for the item file, e.g. {missing[0]}"
        )
    return features


def abx_of_features(
    features: Mapping[str, np.ndarray],
    item_file: str | Path,
    config: AbxConfig,
    name: str,
    *,
    source: str = "",
) -> LayerScore:
    """ABX of one set of features (MFCC, saved features) as a one-row sweep; `source` (else
    `name`) names them in errors."""
    results = abx_scores(features, item_file, config, source=source or name)
    logger.info("ABX %s: %s", name, _describe(results))
    return LayerScore(name, None, results)


def best_score(scores: Sequence[LayerScore]) -> LayerScore:
    """The source with the lowest mean error over the computed speaker modes (first on ties)."""
    if not scores:
        raise ValueError("no ABX scores")
    return min(scores, key=lambda s: s.mean_error)


def format_abx_table(scores: Sequence[LayerScore]) -> str:
    """A markdown table: source, within %, across %, triplets and cells per mode."""
    lines = [
        "| features | within % | across % | triplets (within/across) | cells (within/across) |",
        "|---|---|---|---|---|",
    ]

    def cols(s: LayerScore, attr: str, fmt: str) -> list[str]:
        return [
            format(getattr(s.results[m], attr), fmt) if m in s.results else "-"
            for m in ("within", "across")
        ]

    for s in scores:
        within, across = cols(s, "error_percent", ".2f")
        triplets, cells = (
            "/".join(cols(s, "num_triplets", "d")),
            "/".join(cols(s, "num_cells", "d")),
        )
        lines.append(f"| {s.name} | {within} | {across} | {triplets} | {cells} |")
    return "\n".join(lines) + "\n"


def scores_to_json(scores: Sequence[LayerScore]) -> list[dict]:
    """Each score as abx.json keeps it: name, layer and every speaker mode's result."""
    return [
        {"name": s.name, "layer": s.layer, **{m: to_dict(r) for m, r in s.results.items()}}
        for s in scores
    ]


def scores_from_json(entries: Sequence[Mapping]) -> list[LayerScore]:
    """Inverse of scores_to_json."""
    return [
        LayerScore(
            e["name"],
            e["layer"],
            {m: AbxResult(**e[m]) for m in ("within", "across") if m in e},
        )
        for e in entries
    ]


def _plot(scores: Sequence[LayerScore], path: Path) -> None:
    try:  # lazy: matplotlib is heavy and optional (no figure without it)
        import matplotlib
    except ImportError:
        logger.warning("matplotlib not installed: %s not drawn (pip install matplotlib)", path)
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: after matplotlib.use("Agg")

    x = np.arange(len(scores))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(scores) + 2), 3.2))
    for mode, marker in (("within", "o"), ("across", "s")):
        values = [s.results[mode].error_percent if mode in s.results else np.nan for s in scores]
        if not np.all(np.isnan(values)):
            ax.plot(x, values, marker=marker, label=f"{mode} speaker")
    ax.set_xticks(x, [str(s.layer) if s.layer is not None else s.name for s in scores])
    ax.set_xlabel("layer" if all(s.layer is not None for s in scores) else "features")
    ax.set_ylabel("ABX error (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def write_abx_report(
    scores: Sequence[LayerScore],
    out_dir: str | Path,
    *,
    config: AbxConfig | None = None,
    source: Mapping[str, str] | None = None,
) -> LayerScore:
    """Write abx.json (all scores), abx.md (table), abx.png (error per layer) and
    best_layer.json (what the pipeline reads) into out_dir; return the best source."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    best = best_score(scores)
    best_entry = {
        "name": best.name,
        "layer": best.layer,
        "within": best.within,
        "across": best.across,
        "criterion": BEST_CRITERION,
    }
    report = {
        "source": dict(source or {}),
        "config": to_dict(config) if config is not None else None,
        "scores": scores_to_json(scores),
        "best": best_entry,
    }
    atomic_write_json(out_dir / "abx.json", report)
    atomic_write_text(out_dir / "abx.md", format_abx_table(scores))
    _plot(scores, out_dir / "abx.png")
    atomic_write_json(out_dir / "best_layer.json", best_entry)
    return best
