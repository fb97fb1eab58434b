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
(pairs, rows). Runs on CPU or GPU.
"""

from __future__ import annotations

import math

import numpy as np
import torch

# Cells (pairs x rows x cols) per DTW batch: bounds memory at ~ 30 bytes x this, on any device.
DEFAULT_BATCH_CELLS = 4_000_000
# Floats of gathered features per batch (bounds memory for wide features).
_BATCH_FEATURE_FLOATS = 32_000_000


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
    """(pairs, n, m) -> (n + m - 1, pairs, n): entry [k, :, i] is cell (i, k - i), inf outside.

    Pads each row with n infs and reads the padded matrix with row stride (width - 1): row i
    then starts i cells earlier, so column k holds anti-diagonal k, and the cells off the
    matrix fall into the padding."""
    pairs, n, m = dist.shape
    width = n + m
    padded = dist.new_full((pairs, n, width), math.inf)
    padded[:, :, :m] = dist
    skewed = padded.as_strided((pairs, n, width - 1), (n * width, width - 1, 1))
    return skewed.permute(2, 0, 1).contiguous()


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
    skewed = _skew(dist)  # (diagonals, pairs, n)
    diagonals = n + m - 1
    # Anti-diagonal k lives at index k + 2, row i at column i + 1: column 0 is the virtual
    # row -1 (inf) and index 0 holds diagonal -2, whose virtual cell (-1, -1) starts every path.
    cost = torch.full((diagonals + 2, pairs, n + 1), math.inf, device=device)
    cost[0, :, 0] = 0.0
    # Path lengths under the tie order diag, left, up (this orientation) and diag, up, left
    # (the transposed matrix, i.e. the other token as rows).
    len_left = torch.zeros((diagonals + 2, pairs, n + 1), dtype=torch.int32, device=device)
    len_up = torch.zeros_like(len_left)
    for k in range(diagonals):
        up, left, diag = cost[k + 1, :, :-1], cost[k + 1, :, 1:], cost[k, :, :-1]  # (pairs, n)
        torch.add(skewed[k], torch.minimum(torch.minimum(up, diag), left), out=cost[k + 2, :, 1:])
        take_diag = (diag <= left) & (diag <= up)
        left_first = torch.where(left <= up, len_left[k + 1, :, 1:], len_left[k + 1, :, :-1])
        len_left[k + 2, :, 1:] = torch.where(take_diag, len_left[k, :, :-1], left_first) + 1
        up_first = torch.where(up <= left, len_up[k + 1, :, :-1], len_up[k + 1, :, 1:])
        len_up[k + 2, :, 1:] = torch.where(take_diag, len_up[k, :, :-1], up_first) + 1
    end = (row_lengths + col_lengths, torch.arange(pairs, device=device), row_lengths)
    final_cost, final_len_left, final_len_up = cost[end], len_left[end], len_up[end]
    # The reference divides a float32 cost by an int in double precision, then rounds to float32.
    cost64 = final_cost.double()
    return (cost64 / final_len_left).float(), (cost64 / final_len_up).float()


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
    start = 0
    while start < len(order):
        n_max = int(n[order[start]])
        same_n = int(np.searchsorted(n[order], n_max, side="right"))
        size = max(
            1, min(batch_cells // (n_max * n_max), _BATCH_FEATURE_FLOATS // (2 * n_max * dim))
        )
        chunk = order[start : min(same_n, start + size)]
        start += len(chunk)
        m_max = int(m[chunk].max())
        row_len = torch.as_tensor(n[chunk], device=device)
        col_len = torch.as_tensor(m[chunk], device=device)
        rows = _token_frames(padded, flat_offset[rows_tok[chunk]], row_len, n_max, pad_index)
        cols = _token_frames(padded, flat_offset[cols_tok[chunk]], col_len, m_max, pad_index)
        d_rows, d_cols = dtw_batch(angular_distances(rows, cols), row_len, col_len)
        by_rows[chunk], by_cols[chunk] = d_rows.cpu().numpy(), d_cols.cpu().numpy()
    return np.where(lo_is_rows, by_rows, by_cols), np.where(lo_is_rows, by_cols, by_rows)


def _token_frames(
    padded: torch.Tensor, offsets: np.ndarray, lengths: torch.Tensor, width: int, pad_index: int
) -> torch.Tensor:
    """Gather tokens' frames into (tokens, width, dim), padding rows past each length."""
    steps = torch.arange(width, device=padded.device)
    index = torch.as_tensor(offsets, device=padded.device).unsqueeze(1) + steps  # (tokens, width)
    index = torch.where(steps < lengths.unsqueeze(1), index, pad_index)
    return padded.index_select(0, index.reshape(-1)).view(*index.shape, padded.shape[1])
