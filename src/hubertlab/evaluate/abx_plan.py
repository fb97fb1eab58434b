"""ABX planning: item rows -> tokens, (context, speaker, phone) groups, cells and DTW pairs.

Everything here depends on the item file and the feature lengths only, not on the features,
so one plan serves every layer of a sweep (`abx_sweep`). Tokens take the frames whose centres
fall inside [onset, offset], as Libri-Light picks them.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from hubertlab.data.alignments import AbxItem
from hubertlab.evaluate.abx_dtw import DEFAULT_BATCH_CELLS
from hubertlab.evaluate.frame_checks import check_finite

logger = logging.getLogger(__name__)

SPEAKER_MODES = ("within", "across")


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


@contextlib.contextmanager
def gc_paused():
    """Pause the cyclic garbage collector while an item file is read and planned: that makes
    ~10 small objects per token and no cycles, and each collection it would trigger walks the
    whole heap (torch, a model): on a 10-minute corpus, a third of the time of a full ABX."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


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
    """Tokens with at least one frame, with their frame range; errors for rows past the end.

    Vectorised `token_frame_range` (item files have up to millions of rows)."""
    if not tokens:
        return []
    fileids, onsets, offsets = list(zip(*tokens, strict=True))[:3]
    total = np.array(list(map(num_frames.__getitem__, fileids)), dtype=np.int64)
    onset = np.array(onsets, dtype=np.float64) - config.frame_offset_s
    offset = np.array(offsets, dtype=np.float64) - config.frame_offset_s
    past_end = offset > total * config.frame_shift_s + config.end_tolerance_s
    if past_end.any():
        row = int(np.argmax(past_end))
        token, frames = tokens[row], int(total[row])
        raise ValueError(
            f"{item_file}: row {row + 1}: token {token.phone!r} [{token.onset_s}, "
            f"{token.offset_s}] s ends past the end of {token.fileid!r} ({frames} frames = "
            f"{frames * config.frame_shift_s:.3f} s); wrong frame shift, or features of "
            "other audio?"
        )
    step = 1.0 / config.frame_shift_s
    start = np.maximum(0, np.ceil(step * onset - 0.5)).astype(np.int64)
    end = np.minimum(total, np.floor(step * offset - 0.5)).astype(np.int64)
    usable = (start < total) & (end > start)
    if not usable.all():
        logger.info(
            "%s: %d token(s) shorter than one frame skipped", item_file, int((~usable).sum())
        )
    return [(tokens[i], int(start[i]), int(end[i])) for i in np.flatnonzero(usable).tolist()]


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


def _group_tokens(
    kept: list[tuple[AbxItem, int, int]],
) -> tuple[list[tuple[AbxItem, int, int]], list[tuple]]:
    """Tokens sorted by (context, speaker, phone), stably as Python's sort would, and their
    groups ((prev, next), speaker, phone, first position, end position)."""
    if not kept:
        return [], []
    columns = list(zip(*(k[0] for k in kept), strict=True))
    # Integer codes in string order; np.lexsort's last key is the primary one.
    codes = [np.unique(np.array(columns[c]), return_inverse=True)[1] for c in (3, 6, 5, 4)]
    order = np.lexsort(codes)
    kept = [kept[i] for i in order.tolist()]
    key_changes = np.zeros(len(order) - 1, dtype=bool)
    for code in codes:
        key_changes |= code[order][1:] != code[order][:-1]
    bounds = [0, *(np.flatnonzero(key_changes) + 1).tolist(), len(kept)]
    groups = []
    for first, end in zip(bounds[:-1], bounds[1:], strict=True):
        t = kept[first][0]
        groups.append(((t.prev_phone, t.next_phone), t.speaker, t.phone, first, end))
    return kept, groups


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
    kept, groups = _group_tokens(kept)
    sorted_tokens = [k[0] for k in kept]
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
    used = np.unique(np.concatenate([t[:, c] for t in cells.values() for c in (0, 2)]))
    in_cells = {sorted_tokens[i].phone for i in used.tolist()}
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
    plan: AbxPlan, features: Mapping[str, np.ndarray | torch.Tensor], source: str = "features"
) -> torch.Tensor:
    """The frames of every token, concatenated in plan order -> (total_frames, dim) float32.
    Frames holding NaN or inf are an error naming the file and `source`.

    One copy per file into a joint buffer, then one gather for all tokens (a per-token loop
    costs more than the whole DTW on a 10-minute corpus)."""
    parts, file_base, sources = [], [], []
    base, first = 0, None
    for fileid, spans in plan.by_file.items():
        frames = features[fileid]  # numpy (maybe memory-mapped, float16) or torch
        if frames.ndim != 2:
            raise ValueError(
                f"features of {fileid!r}: expected (frames, dim), got {tuple(frames.shape)}"
            )
        if first is None:
            first = (fileid, frames.shape[1])
        elif frames.shape[1] != first[1]:
            raise ValueError(
                f"features of {fileid!r} have dimension {frames.shape[1]}, "
                f"those of {first[0]!r} {first[1]}"
            )
        end = max(e for _, _, e in spans)  # only what the tokens use
        part = frames[:end]
        # np.array copies: memory-mapped stores are read-only, which torch warns about.
        parts.append(
            part.float() if torch.is_tensor(part) else torch.from_numpy(np.array(part, np.float32))
        )
        check_finite(parts[-1], fileid, source)
        file_base.append(base)
        sources.append(spans)
        base += end
    position = np.empty(len(plan.tokens), dtype=np.int64)
    for offset, spans in zip(file_base, sources, strict=True):
        for pos, start, _ in spans:
            position[pos] = offset + start
    index = np.repeat(position - plan.flat_offset[:-1], plan.num_token_frames) + np.arange(
        plan.total_frames
    )
    return torch.cat(parts).index_select(0, torch.from_numpy(index))
