"""Batched DTW over angular frame distances, for ABX.

The ABX distance between two tokens is the cost of the best DTW path through their frame-wise
angular distances arccos(cos)/pi, divided by the length of that path. The path length is the
one found by the Libri-Light / zerospeech-libriabx2 backtrack: from the last cell, step to the
cheapest predecessor, preferring diagonal, then left (previous column), then up (previous row).
That tie order makes the normalised distance depend on which token indexes the rows, so every
pair gets both orientations from one pass: the cost matrix is the same up to a transpose and
only the tie order of the path length changes.

All pairs of a batch run at once: distances come from one bmm, and the recurrence walks the
anti-diagonals of the (padded) cost matrices, each step a few element-wise ops over
(rows, pairs). Runs on CPU or GPU.
"""

from __future__ import annotations

import math

import numpy as np
import torch

# Cells (pairs x rows x cols) per DTW batch: bounds memory at ~ 30 bytes x this, on any device.
DEFAULT_BATCH_CELLS = 4_000_000
# Floats of gathered features per batch (bounds memory for wide features).
_BATCH_FEATURE_FLOATS = 32_000_000
# What one anti-diagonal step of `dtw_batch` costs beyond its cells, in padded cells: its
# ~20 torch calls take about as long as this many cells' element-wise work (CPU, measured).
_DIAGONAL_COST = 5_000


def normalize_frames(frames: torch.Tensor) -> torch.Tensor:
    """Unit-normalise frames, with the reference's convention for all-zero frames.

    Libri-Light appends a tiny extra coordinate so that a zero frame sits at the maximal
    distance (1) from every non-zero frame and at distance 0 from another zero frame; the
    extra coordinate changes no other distance measurably, so we append it the same way.
    """
    frames = frames.float()  # (frames, dim)
    sq_norm = (frames**2).sum(dim=1, keepdim=True)
    zero = sq_norm.squeeze(1) == 0
    unit = frames / torch.sqrt(sq_norm.clamp_min(torch.finfo(torch.float32).tiny))
    unit[zero] = 1 / math.sqrt(frames.shape[1])
    border = torch.full((frames.shape[0], 1), 1e-12, dtype=unit.dtype, device=unit.device)
    border[zero] = -2e12
    return torch.cat([unit, border], dim=1)  # (frames, dim + 1)


def angular_distances(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """arccos(cos)/pi between every row frame and every column frame of each pair.

    rows: (pairs, n, dim), cols: (pairs, m, dim), both unit-normalised -> (pairs, n, m).
    """
    cos = torch.bmm(rows, cols.transpose(1, 2))
    return torch.clamp(cos, -1, 1).acos() / math.pi


def _skew(dist: torch.Tensor) -> torch.Tensor:
    """(pairs, n, m) -> (n + m - 1, n, pairs): entry [k, i] is cell (i, k - i), inf outside.

    Pads each row with n infs and reads the padded matrix with row stride (width - 1): row i
    then starts i cells earlier, so column k holds anti-diagonal k, and the cells off the
    matrix fall into the padding. Pairs go last: every step of the recurrence then works on
    contiguous runs of `pairs` values (with rows last, the runs would be a few cells long)."""
    pairs, n, m = dist.shape
    width = n + m
    padded = dist.new_full((pairs, n, width), math.inf)
    padded[:, :, :m] = dist
    skewed = padded.as_strided((pairs, n, width - 1), (n * width, width - 1, 1))
    return skewed.permute(2, 1, 0).contiguous()


def dtw_batch(
    dist: torch.Tensor, row_lengths: torch.Tensor, col_lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Path-normalised DTW of a batch of padded distance matrices.

    dist: (pairs, n, m) float32; row_lengths, col_lengths: (pairs,) true sizes (>= 1).
    Returns (by_rows, by_cols), each (pairs,): the normalised cost with the path length of the
    backtrack over this matrix (rows token as "x"), and over its transpose (cols token as "x").
    """
    pairs, n, m = dist.shape
    device = dist.device
    skewed = _skew(dist)  # (diagonals, n, pairs)
    diagonals = n + m - 1
    # Anti-diagonal k lives at index k + 2, row i at index i + 1: row 0 is the virtual row -1
    # (inf) and index 0 holds diagonal -2, whose virtual cell (-1, -1) starts every path.
    cost = torch.full((diagonals + 2, n + 1, pairs), math.inf, device=device)
    cost[0, 0] = 0.0
    # Path lengths under the tie order diag, left, up ([:, 0], this orientation) and diag, up,
    # left ([:, 1], the transposed matrix, i.e. the other token as rows).
    # Left uninitialised but for the start: a cell only takes the length of a neighbour it can
    # be reached from, and unreachable cells (inf cost) never lie on a path.
    lengths = torch.empty((diagonals + 2, 2, n + 1, pairs), dtype=torch.int32, device=device)
    lengths[0, :, 0] = 0
    for k in range(diagonals):
        # Only rows lo..hi of diagonal k lie inside the matrix; the rest stay inf, as the
        # skewed padding would make them (half the element work for square matrices).
        lo, hi = max(0, k - m + 1), min(k, n - 1) + 1
        up, left, diag = cost[k + 1, lo:hi], cost[k + 1, lo + 1 : hi + 1], cost[k, lo:hi]
        best = torch.minimum(torch.minimum(up, diag), left)
        torch.add(skewed[k, lo:hi], best, out=cost[k + 2, lo + 1 : hi + 1])
        # From the left neighbour: on a tie with up in this orientation, only when strictly
        # cheaper in the transposed one.
        from_left = torch.stack([left <= up, left < up])  # (2, rows, pairs)
        previous = lengths[k + 1]
        step = torch.where(from_left, previous[:, lo + 1 : hi + 1], previous[:, lo:hi])
        step = torch.where(diag == best, lengths[k, :, lo:hi], step)
        torch.add(step, 1, out=lengths[k + 2, :, lo + 1 : hi + 1])
    end_diagonal, pair = row_lengths + col_lengths, torch.arange(pairs, device=device)
    final_cost = cost[end_diagonal, row_lengths, pair]
    final_lengths = lengths[end_diagonal, :, row_lengths, pair]  # (pairs, 2)
    # The reference divides a float32 cost by an int in double precision, then rounds to float32.
    cost64 = final_cost.double()
    return (cost64 / final_lengths[:, 0]).float(), (cost64 / final_lengths[:, 1]).float()


def pair_distances(
    frames: torch.Tensor,
    flat_offset: np.ndarray,
    num_token_frames: np.ndarray,
    pairs: np.ndarray,
    *,
    batch_cells: int = DEFAULT_BATCH_CELLS,
) -> tuple[np.ndarray, np.ndarray]:
    """ABX distances of token pairs, in both orientations.

    frames: (total_frames, dim) unit-normalised token frames (any device), token t at
    flat_offset[t] : flat_offset[t] + num_token_frames[t]; pairs: (pairs, 2) token ids lo, hi.
    Returns (lo_rows, hi_rows), each (pairs,) float32: the distance with the lo token (resp.
    the hi token) as the DTW rows, i.e. as the reference's "x".
    """
    device = frames.device
    padded = torch.cat([frames, frames.new_zeros(1, frames.shape[1])])  # last row: padding
    pad_index = frames.shape[0]
    lo, hi = pairs[:, 0], pairs[:, 1]
    lo_is_rows = num_token_frames[lo] >= num_token_frames[hi]  # longer token as rows: fewer pads
    rows_tok, cols_tok = np.where(lo_is_rows, lo, hi), np.where(lo_is_rows, hi, lo)
    n, m = num_token_frames[rows_tok], num_token_frames[cols_tok]
    order = np.lexsort((m, n))
    by_rows = np.empty(len(pairs), dtype=np.float32)
    by_cols = np.empty(len(pairs), dtype=np.float32)
    dim = frames.shape[1]
    for first, last in _length_bins(n[order], m[order]):
        n_max = int(n[order[last - 1]])
        size = max(
            1, min(batch_cells // (n_max * n_max), _BATCH_FEATURE_FLOATS // (2 * n_max * dim))
        )
        for start in range(first, last, size):
            chunk = order[start : min(last, start + size)]
            m_max = int(m[chunk].max())
            row_len = torch.as_tensor(n[chunk], device=device)
            col_len = torch.as_tensor(m[chunk], device=device)
            rows = _token_frames(padded, flat_offset[rows_tok[chunk]], row_len, n_max, pad_index)
            cols = _token_frames(padded, flat_offset[cols_tok[chunk]], col_len, m_max, pad_index)
            d_rows, d_cols = dtw_batch(angular_distances(rows, cols), row_len, col_len)
            by_rows[chunk], by_cols[chunk] = d_rows.cpu().numpy(), d_cols.cpu().numpy()
    return np.where(lo_is_rows, by_rows, by_cols), np.where(lo_is_rows, by_cols, by_rows)


def _length_bins(n: np.ndarray, m: np.ndarray) -> list[tuple[int, int]]:
    """Split pairs sorted by row length n into [first, last) batches that share one padded
    size, minimising a cost model of `dtw_batch`: a fixed cost per anti-diagonal (a few
    dozen torch calls, which dominate for small batches) plus a cost per padded cell.
    Exact-length batches are the other extreme: ABX has 20-40 distinct lengths and most
    pairs are short, so merging the sparse lengths saves most of the calls."""
    unique, starts = np.unique(n, return_index=True)
    lengths, bounds = unique.tolist(), [*starts.tolist(), len(n)]
    m_max = np.maximum.reduceat(m, starts).tolist()
    # best[j]: least cost of the pairs of lengths[:j]; cut[j]: where its last batch starts.
    best, cut = [0.0] * (len(lengths) + 1), [0] * (len(lengths) + 1)
    for j in range(1, len(lengths) + 1):
        rows, cols, best[j] = lengths[j - 1], 0, math.inf
        for i in range(j - 1, -1, -1):  # the last batch holds lengths[i:j]
            cols = max(cols, m_max[i])
            cost = best[i] + _DIAGONAL_COST * (rows + cols) + (bounds[j] - bounds[i]) * rows * cols
            if cost < best[j]:
                best[j], cut[j] = cost, i
    bins, j = [], len(lengths)
    while j > 0:
        bins.append((bounds[cut[j]], bounds[j]))
        j = cut[j]
    return bins[::-1]


def _token_frames(
    padded: torch.Tensor, offsets: np.ndarray, lengths: torch.Tensor, width: int, pad_index: int
) -> torch.Tensor:
    """Gather tokens' frames into (tokens, width, dim), padding rows past each length."""
    steps = torch.arange(width, device=padded.device)
    index = torch.as_tensor(offsets, device=padded.device).unsqueeze(1) + steps  # (tokens, width)
    index = torch.where(steps < lengths.unsqueeze(1), index, pad_index)
    return padded.index_select(0, index.reshape(-1)).view(*index.shape, padded.shape[1])
