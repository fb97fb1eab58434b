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

import torch

# Cells (pairs x rows x cols) per DTW batch: bounds memory at ~ 12 bytes x this, on any device.
DEFAULT_BATCH_CELLS = 4_000_000


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
    """(pairs, n, m) -> (pairs, n + m - 1, n): entry [k, i] is cell (i, k - i), inf outside."""
    pairs, n, m = dist.shape
    k = torch.arange(n + m - 1, device=dist.device).unsqueeze(1)  # (diagonals, 1)
    i = torch.arange(n, device=dist.device).unsqueeze(0)  # (1, n)
    j = k - i
    valid = (j >= 0) & (j < m)
    flat = (i * m + j.clamp(0, m - 1)).reshape(-1)
    skewed = dist.reshape(pairs, n * m)[:, flat].reshape(pairs, n + m - 1, n)
    return skewed.masked_fill(~valid, math.inf)


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
    skewed = _skew(dist)  # (pairs, diagonals, n)
    inf_col = torch.full((pairs, 1), math.inf, device=device)
    zero_col = torch.zeros((pairs, 1), dtype=torch.int32, device=device)
    # Diagonals k-1 and k-2, each padded with a virtual row -1 in front: index i + 1 is row i.
    cost_1 = torch.full((pairs, n + 1), math.inf, device=device)
    cost_2 = torch.full((pairs, n + 1), math.inf, device=device)
    cost_2[:, 0] = 0.0  # the virtual cell (-1, -1) starts every path
    len_left_1 = torch.zeros((pairs, n + 1), dtype=torch.int32, device=device)
    len_up_1, len_left_2, len_up_2 = len_left_1.clone(), len_left_1.clone(), len_left_1.clone()

    end_diagonal = row_lengths + col_lengths - 2  # (pairs,)
    end_row = (row_lengths - 1).unsqueeze(1)
    final_cost = torch.zeros(pairs, device=device)
    final_len_left = torch.ones(pairs, dtype=torch.int32, device=device)
    final_len_up = torch.ones(pairs, dtype=torch.int32, device=device)
    for k in range(n + m - 1):
        up, left, diag = cost_1[:, :-1], cost_1[:, 1:], cost_2[:, :-1]  # (pairs, n) each
        cost = skewed[:, k] + torch.minimum(torch.minimum(up, diag), left)
        take_diag = (diag <= left) & (diag <= up)
        # Tie order diag, left, up (this orientation) and diag, up, left (the transpose).
        len_left = torch.where(
            take_diag, len_left_2[:, :-1], torch.where(left <= up, len_left_1[:, 1:], len_left_1[:, :-1])
        ) + 1
        len_up = torch.where(
            take_diag, len_up_2[:, :-1], torch.where(up <= left, len_up_1[:, :-1], len_up_1[:, 1:])
        ) + 1
        cost_2, cost_1 = cost_1, torch.cat([inf_col, cost], dim=1)
        len_left_2, len_left_1 = len_left_1, torch.cat([zero_col, len_left], dim=1)
        len_up_2, len_up_1 = len_up_1, torch.cat([zero_col, len_up], dim=1)
        done = end_diagonal == k
        if bool(done.any()):
            final_cost = torch.where(done, cost.gather(1, end_row).squeeze(1), final_cost)
            final_len_left = torch.where(done, len_left.gather(1, end_row).squeeze(1), final_len_left)
            final_len_up = torch.where(done, len_up.gather(1, end_row).squeeze(1), final_len_up)
    # The reference divides a float32 cost by an int in double precision, then rounds to float32.
    cost64 = final_cost.double()
    return (cost64 / final_len_left).float(), (cost64 / final_len_up).float()
