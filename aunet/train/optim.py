"""The optimizer and its learning-rate schedule."""
from __future__ import annotations

import math

import torch

from aunet.train.config import TrainConfig


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def lr_factor(step: int, name: str, total_steps: int, warmup_steps: int) -> float:
    """The learning-rate multiplier before optimizer step ``step`` (0-based): a linear warm-up to 1 over
    ``warmup_steps``, times 1 (constant) or a cosine decay to 0 at ``total_steps`` (cosine)."""
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
    if name == "cosine":
        return warm * 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(1, total_steps)))
    return warm


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, cfg.scheduler, total_steps, cfg.warmup_steps)
    )
