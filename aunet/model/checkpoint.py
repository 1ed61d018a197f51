"""Checkpoints: the weights people share, and the training state only a resumed run reads.

A checkpoint is one file (a dict saved by torch.save) in two parts:

- the shared part, read with ``torch.load(weights_only=True)`` by everything that takes a checkpoint from
  someone (aunet-eval, aunet-export): ``{"format": "aunet-checkpoint", "version": 2, "config": ModelConfig dict,
  "model": state_dict, "backbone": where the backbone's initial weights came from}`` plus the trainer's plain
  values ("step", "epoch", "batch_in_epoch", "train_config", "history", "best_metric"). Tensors, dicts, lists,
  str, int, float only: loading it can never run code. A file that needs more is refused.
- ``"training_state"``: the optimizer, scheduler, AMP scaler and RNG states (NumPy's among them), serialized
  on their own as one opaque bytes value. Only ``load_training_state`` unpickles it, for ``aunet-train
  --resume`` of one's own run; reading the shared part never touches it.
"""
from __future__ import annotations

import io
import os
import pickle
import random
import re
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from aunet.config import ModelConfig
from aunet.io import atomic_path

FORMAT = "aunet-checkpoint"
VERSION = 2  # 1: one pickle with the RNG states inside, which only a full unpickler reads
TRAINING_STATE = "training_state"
_UNSAFE_GLOBAL = re.compile(r"(?:GLOBAL|global) ([\w.]+)")


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, unsafe to load, or made for another model config."""


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, training_state: Optional[dict[str, Any]] = None,
                    **info: Any) -> None:
    """Write atomically (temporary file, then rename): a crash never leaves a half-written checkpoint.

    ``info`` joins the shared part and must be plain values (tensors, dicts, lists, str, int, float);
    ``training_state`` (optimizer, RNG, anything picklable) is stored apart, for ``load_training_state``."""
    payload = {"format": FORMAT, "version": VERSION, "config": model.cfg.to_dict(), "model": model.state_dict(),
               "backbone": plain(getattr(model, "backbone_provenance", None) or {"source": "unknown"})}
    payload.update(plain(info))
    if training_state is not None:
        buffer = io.BytesIO()
        torch.save(training_state, buffer)
        payload[TRAINING_STATE] = buffer.getvalue()
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def plain(value: Any) -> Any:
    """``value`` with NumPy scalars and arrays made Python numbers and lists (tuples become lists), so that a
    weights-only load reads it; tensors, str, int, float, bool and None stay as they are."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return value


def _first_line(text: str) -> str:
    return next((line.strip() for line in str(text).splitlines() if line.strip()), "")


def _weights_only_refusal(path: Path, exc: Exception) -> CheckpointError:
    """torch's weights-only refusal, in one line: code the pickle would run, or a file that is no pickle of
    weights at all."""
    text = str(exc)
    match = _UNSAFE_GLOBAL.search(text)
    if match is None:
        detail = re.search(r"WeightsUnpickler error:(.*)", text, re.S)
        reason = _first_line(detail.group(1)) if detail else _first_line(text)
        return CheckpointError(f"cannot read checkpoint {path}: not a file of weights ({reason})")
    what = match.group(1)
    hint = (" (checkpoints of aunet before version 2 kept NumPy's RNG state there: retrain, or re-save a trusted "
            "one of your own)" if what.startswith("numpy") else "")
    return CheckpointError(f"refusing checkpoint {path}: loading it would run {what}, and a checkpoint is read as "
                           f"weights only{hint}")


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The shared part of a checkpoint, read as weights only (``torch.load(weights_only=True)``): a file whose
    pickle would import or call anything (code planted in it) is refused with CheckpointError, unexecuted."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # the weights-only unpickler refused something
        raise _weights_only_refusal(path, exc) from None
    except Exception as exc:  # truncated file, not a torch file, ...
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {_first_line(exc)}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an AUNet checkpoint")
    if data.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {data.get('version')} is not supported (this build "
                              f"reads {VERSION})")
    return data


def load_training_state(data: dict[str, Any], path: str | os.PathLike) -> dict[str, Any]:
    """The optimizer, scheduler, scaler and RNG states of a checkpoint's shared part ``data`` (from
    load_checkpoint). This unpickles with ``weights_only=False``: only ``aunet-train --resume`` calls it, on
    the run's own last.pt."""
    blob = data.get(TRAINING_STATE)
    if not isinstance(blob, (bytes, bytearray)):
        raise CheckpointError(f"{path} holds weights only, no training state (optimizer, RNG): it cannot be resumed")
    try:
        state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"{path}: unreadable training state: {type(exc).__name__}: {_first_line(exc)}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: the training state is not a mapping")
    return state


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


def model_from_checkpoint(data: dict[str, Any], path: str | os.PathLike, expect: ModelConfig | None = None) -> torch.nn.Module:
    """The model of a checkpoint's shared part ``data``, in eval mode, with the backbone provenance it records."""
    from aunet.model import build_model

    cfg = checkpoint_config(data, path, expect)
    model = build_model(cfg)
    try:
        model.load_state_dict(data["model"])
    except (KeyError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{path}: weights do not fit config {cfg.name!r}: {str(exc).splitlines()[0]}") from None
    provenance = data.get("backbone")
    model.backbone_provenance = dict(provenance) if isinstance(provenance, dict) else {"source": "unknown"}
    return model.eval()


def load_model(path: str | os.PathLike, expect: ModelConfig | None = None) -> torch.nn.Module:
    """The model of a checkpoint (read as weights only), in eval mode. ``expect`` rejects a checkpoint from
    another config."""
    return model_from_checkpoint(load_checkpoint(path), path, expect)


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
