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

import logging
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hubertlab.data.alignments import AbxItem, read_item_file
from hubertlab.evaluate.abx_dtw import (
    DEFAULT_BATCH_CELLS,
    normalize_frames,
    pair_distances,
)

logger = logging.getLogger(__name__)

SPEAKER_MODES = ("within", "across")
# Triplets scored per numpy batch (bounds memory: ~60 bytes each).
_BATCH_TRIPLETS = 4_000_000


@dataclass(frozen=True)
class AbxConfig:
    frame_shift_s: float = 0.02
    """Seconds between frames: 0.02 for HuBERT layers, 0.01 for MFCC."""
    frame_offset_s: float = 0.0
    """Shift of frame times: frame i is centred at (i + 0.5) * frame_shift_s + frame_offset_s
    (the Libri-Light convention when 0)."""
    speaker_modes: tuple[str, ...] = SPEAKER_MODES
    max_tokens_per_group: int | None = None
    """Subsample each (context, speaker, phone) group to this many tokens (reference: 10)."""
    max_x_speakers: int | None = None
    """Across-speaker: at most this many X speakers per A group (reference: 5)."""
    seed: int = 3459
    end_tolerance_s: float = 0.05
    """A token may end this far past the last frame (conv edge effects); further is an error."""
    batch_cells: int = DEFAULT_BATCH_CELLS
    device: str = "cpu"

    def __post_init__(self) -> None:
        if not self.frame_shift_s > 0:
            raise ValueError(f"frame_shift_s must be > 0, got {self.frame_shift_s}")
        if not self.speaker_modes or any(m not in SPEAKER_MODES for m in self.speaker_modes):
            raise ValueError(
                f"speaker_modes must be within and/or across, got {self.speaker_modes}"
            )
        for name in ("max_tokens_per_group", "max_x_speakers"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {value}")
        if self.end_tolerance_s < 0:
            raise ValueError(f"end_tolerance_s must be >= 0, got {self.end_tolerance_s}")
        if self.batch_cells < 1:
            raise ValueError(f"batch_cells must be >= 1, got {self.batch_cells}")


@dataclass(frozen=True)
class AbxResult:
    """ABX error of one speaker mode, in percent, and what it was computed from."""

    speaker_mode: str
    error_percent: float
    num_triplets: int
    num_cells: int
    num_phone_pairs: int
    num_tokens: int


def token_frame_range(
    onset_s: float, offset_s: float, num_frames: int, config: AbxConfig
) -> tuple[int, int]:
    """[start, end) frames of a token, as Libri-Light picks them (end may be <= start)."""
    step = 1.0 / config.frame_shift_s
    onset, offset = onset_s - config.frame_offset_s, offset_s - config.frame_offset_s
    start = max(0, math.ceil(step * onset - 0.5))
    end = min(num_frames, math.floor(step * offset - 0.5))
    return start, end


@dataclass
class AbxPlan:
    """Tokens, groups, DTW pairs and cells: everything but the features, shared by layers.

    Tokens are sorted by (context, speaker, phone, item row), so each group is a contiguous
    range of token positions.
    """

    item_file: str
    tokens: list[AbxItem]  # kept tokens, sorted
    frame_start: np.ndarray  # (tokens,)
    num_token_frames: np.ndarray  # (tokens,)
    flat_offset: np.ndarray  # (tokens + 1,): where each token's frames go in a flat buffer
    pairs: np.ndarray  # (pairs, 2) token positions lo < hi whose DTW is needed
    cells: dict[str, np.ndarray] = field(default_factory=dict)
    """mode -> (cells, 9): a_start, a_end, b_start, b_end, x_start, x_end, speaker (A),
    phone pair id, context-or-(context, X speaker) id."""
    by_file: dict[str, list[tuple[int, int, int]]] = field(default_factory=dict)
    """fileid -> (token position, start frame, end frame)."""

    @property
    def total_frames(self) -> int:
        return int(self.flat_offset[-1])


def _check_files(tokens: Sequence[AbxItem], num_frames: Mapping[str, int], item_file: str) -> None:
    missing: dict[str, int] = {}
    for row, token in enumerate(tokens, start=1):
        if token.fileid not in num_frames and token.fileid not in missing:
            missing[token.fileid] = row
    if missing:
        shown = ", ".join(f"{f!r} (row {n})" for f, n in list(missing.items())[:5])
        raise ValueError(
            f"{item_file}: no features for {len(missing)} file(s) of the item file: {shown}"
            + (" ..." if len(missing) > 5 else "")
        )


def _select_tokens(
    tokens: Sequence[AbxItem], num_frames: Mapping[str, int], config: AbxConfig, item_file: str
) -> list[tuple[AbxItem, int, int]]:
    """Tokens with at least one frame, with their frame range; errors for rows past the end."""
    kept, too_short = [], 0
    for row, token in enumerate(tokens, start=1):
        total = int(num_frames[token.fileid])
        end_s = total * config.frame_shift_s + config.frame_offset_s + config.end_tolerance_s
        if token.offset_s > end_s:
            raise ValueError(
                f"{item_file}: row {row}: token {token.phone!r} [{token.onset_s}, "
                f"{token.offset_s}] s ends past the end of {token.fileid!r} ({total} frames = "
                f"{total * config.frame_shift_s:.3f} s); wrong frame shift, or features of "
                "other audio?"
            )
        start, end = token_frame_range(token.onset_s, token.offset_s, total, config)
        if start >= total or end <= start:
            too_short += 1
            continue
        kept.append((token, start, end))
    if too_short:
        logger.info("%s: %d token(s) shorter than one frame skipped", item_file, too_short)
    return kept


def _subsample(
    kept: list[tuple[AbxItem, int, int]], limit: int | None, rng: np.random.Generator
) -> list[tuple[AbxItem, int, int]]:
    if limit is None:
        return kept
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, (t, _, _) in enumerate(kept):
        groups[(t.prev_phone, t.next_phone, t.speaker, t.phone)].append(i)
    chosen = []
    for members in groups.values():
        if len(members) > limit:
            members = sorted(rng.choice(members, size=limit, replace=False).tolist())
        chosen.extend(members)
    return [kept[i] for i in sorted(chosen)]


def _ragged_pairs(x_ranges: np.ndarray, y_ranges: np.ndarray) -> np.ndarray:
    """All (x, y) with x in [x0, x1), y in [y0, y1), for each row of ranges -> (n, 2)."""
    nx, ny = x_ranges[:, 1] - x_ranges[:, 0], y_ranges[:, 1] - y_ranges[:, 0]
    counts = nx * ny
    row = np.repeat(np.arange(len(counts)), counts)
    local = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    x = x_ranges[row, 0] + local // ny[row]
    y = y_ranges[row, 0] + local % ny[row]
    return np.stack([x, y], axis=1)


def _build_cells(groups: list[tuple], config: AbxConfig, rng: np.random.Generator) -> dict:
    """Cells per speaker mode from groups (context, speaker, phone, start, end)."""
    by_ctx_spk: dict[tuple, list[tuple]] = defaultdict(list)
    by_ctx_phone: dict[tuple, list[tuple]] = defaultdict(list)
    for g in groups:
        by_ctx_spk[(g[0], g[1])].append(g)
        by_ctx_phone[(g[0], g[2])].append(g)
    phone_pair_ids: dict[tuple, int] = {}
    ctx_x_ids: dict[tuple, int] = {}
    speaker_ids: dict[str, int] = {}
    context_ids: dict[tuple, int] = {}
    within, across = [], []
    for (ctx, spk), members in by_ctx_spk.items():
        if len(members) < 2:
            continue
        spk_id = speaker_ids.setdefault(spk, len(speaker_ids))
        ctx_id = context_ids.setdefault(ctx, len(context_ids))
        for a in members:
            others = [b for b in members if b is not a]
            if "within" in config.speaker_modes and a[4] - a[3] >= 2:
                for b in others:
                    pair = phone_pair_ids.setdefault((a[2], b[2]), len(phone_pair_ids))
                    within.append((a[3], a[4], b[3], b[4], a[3], a[4], spk_id, pair, ctx_id))
            if "across" in config.speaker_modes:
                xs = [x for x in by_ctx_phone[(ctx, a[2])] if x[1] != spk]
                if config.max_x_speakers is not None and len(xs) > config.max_x_speakers:
                    picked = rng.choice(len(xs), size=config.max_x_speakers, replace=False)
                    xs = [xs[i] for i in sorted(picked)]
                for x in xs:
                    cx = ctx_x_ids.setdefault((ctx, x[1]), len(ctx_x_ids))
                    for b in others:
                        pair = phone_pair_ids.setdefault((a[2], b[2]), len(phone_pair_ids))
                        across.append((a[3], a[4], b[3], b[4], x[3], x[4], spk_id, pair, cx))
    cells = {"within": within, "across": across}
    return {m: np.array(cells[m], dtype=np.int64).reshape(-1, 9) for m in config.speaker_modes}


def prepare_abx(
    tokens: Sequence[AbxItem],
    num_frames: Mapping[str, int],
    config: AbxConfig,
    *,
    item_file: str = "<item file>",
) -> AbxPlan:
    """Check the item rows against the feature lengths and lay out groups, cells and pairs."""
    _check_files(tokens, num_frames, item_file)
    rng = np.random.default_rng(config.seed)
    kept = _subsample(
        _select_tokens(tokens, num_frames, config, item_file), config.max_tokens_per_group, rng
    )
    kept.sort(key=lambda k: (k[0].prev_phone, k[0].next_phone, k[0].speaker, k[0].phone))
    sorted_tokens = [k[0] for k in kept]
    groups: list[tuple] = []
    for pos, t in enumerate(sorted_tokens):
        key = ((t.prev_phone, t.next_phone), t.speaker, t.phone)
        if groups and groups[-1][:3] == key:
            groups[-1] = (*key, groups[-1][3], pos + 1)
        else:
            groups.append((*key, pos, pos + 1))
    cells = _build_cells(groups, config, rng)
    for mode, table in cells.items():
        if len(table) == 0:
            need = {
                "within": "a (context, speaker) with two phones, one of them with 2 tokens",
                "across": "a (context, phone) from two speakers, one with another phone there",
            }[mode]
            raise ValueError(
                f"{item_file}: no {mode}-speaker ABX cell among {len(sorted_tokens)} usable "
                f"tokens: too few tokens; needs {need}"
            )
    pair_parts = []
    for table in cells.values():
        pair_parts.append(_ragged_pairs(table[:, 4:6], table[:, 0:2]))  # X x A
        pair_parts.append(_ragged_pairs(table[:, 4:6], table[:, 2:4]))  # X x B
    pairs = np.concatenate(pair_parts)
    lo, hi = pairs.min(axis=1), pairs.max(axis=1)
    codes = np.unique((lo * len(sorted_tokens) + hi)[lo != hi])  # sorted, as score_plan needs
    pairs = np.stack([codes // len(sorted_tokens), codes % len(sorted_tokens)], axis=1)
    start = np.array([k[1] for k in kept], dtype=np.int64)
    lengths = np.array([k[2] - k[1] for k in kept], dtype=np.int64)
    by_file: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
    for pos, (t, s, e) in enumerate(kept):
        by_file[t.fileid].append((pos, s, e))
    in_cells = {sorted_tokens[i].phone for t in cells.values() for i in set(t[:, 0]) | set(t[:, 2])}
    unused = {t.phone for t in sorted_tokens} - in_cells
    if unused:
        logger.info(
            "%s: phones in no ABX cell (too few tokens per context): %s",
            item_file,
            " ".join(sorted(unused)),
        )
    return AbxPlan(
        item_file=item_file,
        tokens=sorted_tokens,
        frame_start=start,
        num_token_frames=lengths,
        flat_offset=np.concatenate([[0], np.cumsum(lengths)]),
        pairs=pairs,
        cells=cells,
        by_file=dict(by_file),
    )


def gather_token_frames(
    plan: AbxPlan, features: Mapping[str, np.ndarray | torch.Tensor]
) -> torch.Tensor:
    """The frames of every token, concatenated in plan order -> (total_frames, dim) float32."""
    parts: list[torch.Tensor] = [torch.empty(0)] * len(plan.tokens)
    dims: dict[int, str] = {}
    for fileid, spans in plan.by_file.items():
        frames = features[fileid]  # numpy (maybe memory-mapped, float16) or torch
        if frames.ndim != 2:
            raise ValueError(
                f"features of {fileid!r}: expected (frames, dim), got {tuple(frames.shape)}"
            )
        first_dim, first_file = next(iter(dims.items()), (frames.shape[1], fileid))
        if frames.shape[1] != first_dim:
            raise ValueError(
                f"features of {fileid!r} have dimension {frames.shape[1]}, "
                f"those of {first_file!r} {first_dim}"
            )
        dims[first_dim] = first_file
        for pos, start, end in spans:
            part = frames[start:end]
            if not torch.is_tensor(part):
                part = torch.from_numpy(np.array(part, dtype=np.float32))
            parts[pos] = part.float()
    return torch.cat(parts)


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
) -> dict[str, AbxResult]:
    """ABX error per speaker mode for features given as fileid -> (frames, dim)."""
    config = config or AbxConfig()
    num_frames = {fileid: len(f) for fileid, f in features.items()}
    plan = prepare_abx(read_item_file(item_file), num_frames, config, item_file=str(item_file))
    return score_plan(plan, gather_token_frames(plan, features), config)
