"""Training checkpoints: one file with the model weights, its ModelConfig and the trainer's state.

Format (a dict saved by torch.save): {"format": "aunet-checkpoint", "version": 1, "config": ModelConfig dict,
"model": state_dict, ...trainer state}. The trainer (aunet.train.loop) adds "optimizer", "scheduler", "scaler",
"step", "epoch", "batch_in_epoch", "rng" (capture_rng_state), "train_config", "metrics" and "best_metric".
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aunet.config import ModelConfig
from aunet.io import atomic_path

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


def checkpoint_config(data: dict[str, Any], path: str | os.PathLike, expect: ModelConfig | None = None) -> ModelConfig:
    """The ModelConfig a checkpoint was made with; ``expect`` rejects one from another config.

    The backbone's init-weights source and the config's name do not change the network, so they may differ.
    """
    try:
        cfg = ModelConfig.from_dict(data["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: bad model config in checkpoint: {exc}") from None
    if expect is not None and cfg.replace(backbone_weights="none", name="") != expect.replace(
        backbone_weights="none", name=""
    ):
        raise CheckpointError(f"{path} was trained with config {cfg.name!r}, which differs from {expect.name!r}")
    return cfg


def load_model(path: str | os.PathLike, expect: ModelConfig | None = None) -> torch.nn.Module:
    """The model of a checkpoint, in eval mode. ``expect`` rejects a checkpoint from another config."""
    from aunet.model import build_model

    data = load_checkpoint(path)
    cfg = checkpoint_config(data, path, expect)
    model = build_model(cfg)
    try:
        model.load_state_dict(data["model"])
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: weights do not fit config {cfg.name!r}: {str(exc).splitlines()[0]}") from None
    return model.eval()


def capture_rng_state() -> dict[str, Any]:
    """Every RNG the trainer draws from (Python, NumPy, torch CPU and CUDA), for a bit-for-bit resume."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
