"""AdamW and the learning rate as a pure function of the step (testable without a model)."""

from __future__ import annotations

import math

import torch
from torch import nn

from hubertlab.config import OptimSection


def lr_at(step: int, cfg: OptimSection) -> float:
    """Learning rate of update `step` (0-based): linear warm-up from 0, then the schedule.

    linear: straight to final_lr_scale * lr at max_steps (fairseq polynomial_decay, power 1);
    cosine: half a cosine down to final_lr_scale * lr; constant: lr after warm-up;
    tri_stage: lr held for hold_fraction * max_steps, then exponential decay to
    final_lr_scale * lr at max_steps (fairseq tri_stage)."""
    warmup = cfg.num_warmup_steps
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    if cfg.schedule == "constant":
        return cfg.lr
    final = cfg.final_lr_scale
    if cfg.schedule == "tri_stage":
        hold_end = warmup + int(cfg.hold_fraction * cfg.max_steps)
        if step < hold_end:
            return cfg.lr
        decay_steps = max(1, cfg.max_steps - hold_end)
        progress = min(1.0, (step - hold_end) / decay_steps)
        return cfg.lr * final**progress
    progress = min(1.0, (step - warmup) / max(1, cfg.max_steps - warmup))
    if cfg.schedule == "linear":
        return cfg.lr * (1.0 - progress * (1.0 - final))
    # cosine
    return cfg.lr * (final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def build_optimizer(
    model: nn.Module, cfg: OptimSection, *, fused: bool = False
) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and convolutions only (not on biases, norms or the
    mask embedding: decaying them only pulls them towards zero). `fused` uses the single-kernel
    implementation (CUDA and CPU)."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.dim() >= 2 else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    kwargs = {"fused": True} if fused else {}
    return torch.optim.AdamW(groups, lr=lr_at(0, cfg), betas=cfg.betas, eps=cfg.eps, **kwargs)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
