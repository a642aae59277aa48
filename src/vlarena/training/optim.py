"""AdamW parameter groups (no decay on norms and biases, per-module learning-rate multipliers)
and the warmup + cosine schedule."""

from __future__ import annotations

import math

import torch
from torch import nn


def param_groups(
    model: nn.Module, weight_decay: float, lr_multipliers: dict[str, float] | None = None
) -> list[dict]:
    """Groups of trainable parameters keyed by (decay, learning-rate multiplier).

    Matrices decay; biases, norm gains and 1-d parameters (temperatures) do not. A parameter
    takes the multiplier of the longest matching name prefix in `lr_multipliers`; a
    multiplier of 0 leaves it out (frozen).
    """
    mults = lr_multipliers or {}
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        prefix = max((k for k in mults if name.startswith(k)), key=len, default=None)
        mult = mults[prefix] if prefix is not None else 1.0
        if mult == 0:
            continue
        decay = p.dim() >= 2 and "norm" not in name
        groups.setdefault((decay, mult), []).append(p)
    return [
        {"params": ps, "weight_decay": weight_decay if decay else 0.0, "lr_mult": mult}
        for (decay, mult), ps in sorted(groups.items(), key=lambda kv: (not kv[0][0], -kv[0][1]))
    ]


def lr_factor(step: int, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """Linear warmup to 1, then cosine decay to `min_ratio` at `total_steps`."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(
    model: nn.Module, lr: float, weight_decay: float, lr_multipliers: dict[str, float] | None = None
) -> torch.optim.AdamW:
    groups = param_groups(model, weight_decay, lr_multipliers)
    for g in groups:
        g["lr"] = lr * g["lr_mult"]
        g["base_lr"] = g["lr"]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-8)


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = g["base_lr"] * factor
