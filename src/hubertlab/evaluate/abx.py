"""ABX phone discriminability (Libri-Light / ZeroSpeech 2021), within context.

A triplet (A, B, X): A and X are tokens of one phone, B of another, all in the same context
(previous and next phone). Within-speaker: A, B, X share a speaker; across-speaker: A and B
share a speaker, X has another. Error 1 if d(A, X) > d(B, X), 0.5 on ties, with d the
path-normalised DTW of angular frame distances (`abx_dtw`). Errors are averaged per cell, then
as zerospeech-libriabx2 does: within, over contexts, speakers, phone pairs; across, over
(context, X-speaker) cells, then A-speakers, then phone pairs.

Unlike the reference, every token of every group is used by default (no random subsampling),
so the score is deterministic; `max_tokens_per_group` / `max_x_speakers` restore the
reference's sampling for very large corpora.

Use `abx_scores(features, item_file, config)` for features of one kind, or `prepare_abx` once
and `score_plan` per layer (`abx_sweep`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hubertlab.data.alignments import read_item_file
from hubertlab.evaluate.abx_dtw import normalize_frames, pair_distances
from hubertlab.evaluate.abx_plan import (
    SPEAKER_MODES,
    AbxConfig,
    AbxPlan,
    gather_token_frames,
    gc_paused,
    prepare_abx,
)

__all__ = [
    "SPEAKER_MODES",
    "AbxConfig",
    "AbxPlan",
    "AbxResult",
    "abx_scores",
    "gather_token_frames",
    "gc_paused",
    "prepare_abx",
    "read_item_file",
    "score_plan",
]

# Triplets scored per numpy batch (bounds memory: ~60 bytes each).
_BATCH_TRIPLETS = 4_000_000


@dataclass(frozen=True)
class AbxResult:
    """ABX error of one speaker mode, in percent, and what it was computed from."""

    speaker_mode: str
    error_percent: float
    num_triplets: int
    num_cells: int
    num_phone_pairs: int
    num_tokens: int


def score_plan(
    plan: AbxPlan, token_frames: torch.Tensor, config: AbxConfig
) -> dict[str, AbxResult]:
    """ABX error per speaker mode from the tokens' frames (`gather_token_frames` order)."""
    if token_frames.shape[0] != plan.total_frames:
        raise ValueError(
            f"expected {plan.total_frames} token frames for {plan.item_file}, "
            f"got {token_frames.shape[0]}"
        )
    frames = normalize_frames(token_frames.to(config.device))
    lo_rows, hi_rows = pair_distances(
        frames, plan.flat_offset, plan.num_token_frames, plan.pairs, batch_cells=config.batch_cells
    )
    codes = (
        plan.pairs[:, 0] * len(plan.tokens) + plan.pairs[:, 1]
    )  # sorted: pairs are unique-sorted

    def distance(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        lo, hi = np.minimum(rows, cols), np.maximum(rows, cols)
        index = np.searchsorted(codes, lo * len(plan.tokens) + hi)
        return np.where(rows <= cols, lo_rows[index], hi_rows[index])

    results = {}
    for mode, cells in plan.cells.items():
        errors, triplets = _cell_errors(cells, distance, symmetric=mode == "within")
        error, num_pairs = _aggregate(cells, errors)
        results[mode] = AbxResult(
            speaker_mode=mode,
            error_percent=100.0 * error,
            num_triplets=int(triplets.sum()),
            num_cells=len(cells),
            num_phone_pairs=num_pairs,
            num_tokens=len(plan.tokens),
        )
    return results


def _cell_errors(cells: np.ndarray, distance, *, symmetric: bool) -> tuple[np.ndarray, np.ndarray]:
    """Mean triplet error and triplet count of each cell.

    Within-speaker (symmetric), X runs over the A tokens other than A itself, and d(A, X) takes
    the earlier token of the pair as the DTW rows, as the reference's symmetric matrix does.
    """
    na, nb, nx = (cells[:, k + 1] - cells[:, k] for k in (0, 2, 4))
    counts = nx * na * nb
    scores = np.zeros(len(cells))
    first = 0
    while first < len(cells):
        last = first + max(1, int(np.searchsorted(np.cumsum(counts[first:]), _BATCH_TRIPLETS)))
        chunk = np.arange(first, min(last, len(cells)))
        first = chunk[-1] + 1
        cell = np.repeat(chunk, counts[chunk])
        local = np.arange(len(cell)) - np.repeat(
            np.cumsum(counts[chunk]) - counts[chunk], counts[chunk]
        )
        x = cells[cell, 4] + local // (na[cell] * nb[cell])
        a = cells[cell, 0] + (local // nb[cell]) % na[cell]
        b = cells[cell, 2] + local % nb[cell]
        if symmetric:
            keep = x != a
            cell, x, a, b = cell[keep], x[keep], a[keep], b[keep]
            d_ax = distance(np.minimum(x, a), np.maximum(x, a))
        else:
            d_ax = distance(x, a)
        d_bx = distance(x, b)
        correct = (d_ax < d_bx) + 0.5 * (d_ax == d_bx)
        scores += np.bincount(cell, weights=correct, minlength=len(cells))
    triplets = nx * (na - 1) * nb if symmetric else counts
    return 1.0 - scores / triplets, triplets


def _aggregate(cells: np.ndarray, errors: np.ndarray) -> tuple[float, int]:
    """Mean over the last cell key (context, or context and X speaker), then speakers, then
    phone pairs, as zerospeech-libriabx2 does. Returns (error, number of phone pairs)."""
    speaker_pair = cells[:, 6] * (cells[:, 7].max() + 1) + cells[:, 7]
    groups, inverse = np.unique(speaker_pair, return_inverse=True)
    per_speaker = np.bincount(inverse, weights=errors) / np.bincount(inverse)
    pair_of_group = groups % (cells[:, 7].max() + 1)
    pairs, inverse = np.unique(pair_of_group, return_inverse=True)
    per_pair = np.bincount(inverse, weights=per_speaker) / np.bincount(inverse)
    return float(per_pair.mean()), len(pairs)


def abx_scores(
    features: Mapping[str, np.ndarray | torch.Tensor],
    item_file: str | Path,
    config: AbxConfig | None = None,
    source: str = "features",
) -> dict[str, AbxResult]:
    """ABX error per speaker mode for features given as fileid -> (frames, dim). `source`
    names the features in errors (NaN or inf frames, token rows past a file's end)."""
    config = config or AbxConfig()
    num_frames = {fileid: len(f) for fileid, f in features.items()}
    with gc_paused():
        tokens = read_item_file(item_file)
        plan = prepare_abx(tokens, num_frames, config, item_file=str(item_file))
    return score_plan(plan, gather_token_frames(plan, features, source), config)
