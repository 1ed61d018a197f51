"""Training checkpoints: one file with the model weights, its ModelConfig and the trainer's state.

Format (a dict saved by torch.save): {"format": "aunet-checkpoint", "version": 1, "config": ModelConfig dict,
"model": state_dict, ...trainer state (optimizer, scheduler, step, rng, train config, metrics)}.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .config import ModelConfig
from .io import atomic_path

FORMAT = "aunet-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, or made for another model config."""


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, **state: Any) -> None:
    """Write atomically (temporary file, then rename): a crash never leaves a half-written checkpoint."""
    payload = {"format": FORMAT, "version": VERSION, "config": model.cfg.to_dict(), "model": model.state_dict()}
    payload.update(state)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # truncated file, not a torch file, ...
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an AUNet checkpoint")
    if data.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {data.get('version')} is not supported")
    return data


def load_model(path: str | os.PathLike, expect: ModelConfig | None = None) -> torch.nn.Module:
    """The model of a checkpoint, in eval mode. ``expect`` rejects a checkpoint from another config."""
    from .model import build_model

    data = load_checkpoint(path)
    try:
        cfg = ModelConfig.from_dict(data["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: bad model config in checkpoint: {exc}") from None
    if expect is not None and cfg.replace(backbone_weights="none", name="") != expect.replace(
        backbone_weights="none", name=""
    ):
        raise CheckpointError(f"{path} was trained with config {cfg.name!r}, which differs from {expect.name!r}")
    model = build_model(cfg)
    try:
        model.load_state_dict(data["model"])
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: weights do not fit config {cfg.name!r}: {str(exc).splitlines()[0]}") from None
    return model.eval()
