"""Online codebooks of SpidR and DinoSR (REFERENCE 7.1): one per target layer, stored as EMA
sums of the targets assigned to each codeword and EMA counts (codeword = sum / count).

Assignment is the nearest codeword (squared Euclidean) in fp32, outside autocast. Training
forwards only *collect* statistics (assignment counts, summed targets, summed predicted
probabilities); `apply_update` reduces them across ranks in one collective and moves the
codebooks once per optimizer step, so the update does not depend on how the step's batch is
split into micro-batches and ranks.
"""

from __future__ import annotations

import torch
from torch import distributed as dist
from torch import nn


class Codebook(nn.Module):
    """`size` codewords of `dim` values as EMA sums (size, dim) and counts (size,)."""

    def __init__(self, dim: int, size: int) -> None:
        super().__init__()
        # Random codewords, each coordinate standardised over the codewords (as the spidr
        # package draws them); counts of one make sum / count the codeword itself.
        sums = torch.randn(size, dim)
        sums = (sums - sums.mean(0)) / torch.sqrt(sums.var(0, unbiased=False) + 1e-5)
        self.register_buffer("sums", sums.contiguous())
        self.register_buffer("counts", torch.ones(size))

    @torch.no_grad()
    def assign(self, targets: torch.Tensor) -> torch.Tensor:
        """Index of the nearest codeword of each target (N, dim) -> (N,) long."""
        with torch.autocast(targets.device.type, enabled=False):
            codewords = self.sums / self.counts[:, None]  # (size, dim)
            # ||c||^2 - 2 t.c: the ||t||^2 term does not change the argmin.
            distances = torch.addmm(
                codewords.square().sum(1), targets.float(), codewords.t(), alpha=-2
            )  # (N, size)
            return distances.argmin(1)

    @torch.no_grad()
    def update(self, counts: torch.Tensor, sums: torch.Tensor, decay: float) -> None:
        """EMA towards a step's assignment counts (size,) and summed targets (size, dim);
        codewords nobody chose are left as they are."""
        alpha = torch.where(counts != 0, decay, 1.0)  # (size,)
        self.counts.mul_(alpha).add_((1 - alpha) * counts)
        self.sums.mul_(alpha[:, None]).add_((1 - alpha)[:, None] * sums)


class CodebookStats:
    """A step's codebook statistics, summed over its micro-batches (not part of the state:
    a step starts with none)."""

    def __init__(self) -> None:
        self.counts: torch.Tensor | None = None  # (codebooks, size) assignments
        self.sums: torch.Tensor | None = None  # (codebooks, size, dim) summed targets
        self.pred_sums: torch.Tensor | None = None  # (codebooks, size) summed probabilities
        self.frames = 0.0

    def add(self, counts: torch.Tensor, sums: torch.Tensor, pred_sums: torch.Tensor) -> None:
        if self.counts is None:
            self.counts, self.sums, self.pred_sums = counts, sums, pred_sums
        else:
            self.counts = self.counts + counts
            self.sums = self.sums + sums
            self.pred_sums = self.pred_sums + pred_sums
        self.frames += float(counts[0].sum())


class Codebooks(nn.ModuleList):
    """The codebooks of every target layer, and the statistics of the current step."""

    def __init__(self, num_codebooks: int, dim: int, size: int, decay: float) -> None:
        super().__init__(Codebook(dim, size) for _ in range(num_codebooks))
        self.decay, self.size, self.dim = decay, size, dim
        self.pending = CodebookStats()

    @torch.no_grad()
    def assign(self, targets: list[torch.Tensor]) -> torch.Tensor:
        """Codeword indices (codebooks, N) of each codebook's targets (N, dim)."""
        return torch.stack([cb.assign(t) for cb, t in zip(self, targets, strict=True)])

    @torch.no_grad()
    def statistics(
        self, targets: list[torch.Tensor], labels: torch.Tensor, probs: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Assignment counts (C, K), summed targets (C, K, D) and summed predicted
        probabilities (C, K) of one batch, in fp32."""
        counts = torch.stack([torch.bincount(lab, minlength=self.size) for lab in labels]).float()
        sums = torch.stack(
            [
                t.new_zeros(self.size, self.dim).index_add_(0, lab, t.float())
                for t, lab in zip(targets, labels, strict=True)
            ]
        )
        pred_sums = torch.stack([p.float().sum(0) for p in probs])
        return counts, sums, pred_sums

    def reset(self) -> None:
        """Forget the statistics collected so far (a new step starts)."""
        self.pending = CodebookStats()

    @torch.no_grad()
    def apply_update(self) -> dict[str, torch.Tensor] | None:
        """All-reduce the step's statistics (one collective), move the codebooks, and return
        the step's perplexities ({"target": (C,), "pred": (C,)}); None without statistics."""
        stats, self.pending = self.pending, CodebookStats()
        if stats.counts is None:
            return None
        num = stats.counts.numel()
        flat = torch.cat([stats.counts.flatten(), stats.pred_sums.flatten(), stats.sums.flatten()])
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(flat)
        counts = flat[:num].view_as(stats.counts)
        pred_sums = flat[num : 2 * num].view_as(stats.pred_sums)
        sums = flat[2 * num :].view_as(stats.sums)
        if self.decay < 1.0:
            for codebook, c, s in zip(self, counts, sums, strict=True):
                codebook.update(c, s, self.decay)
        frames = counts[0].sum().clamp(min=1.0)
        return {"target": perplexity(counts / frames), "pred": perplexity(pred_sums / frames)}


def perplexity(distributions: torch.Tensor) -> torch.Tensor:
    """2 ** entropy in bits of each row of (C, K) probabilities (K at most)."""
    return torch.exp2(-(distributions * torch.log2(distributions + 1e-8)).sum(-1))
