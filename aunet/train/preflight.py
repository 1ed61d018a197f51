"""The checks of a run's inputs that need no PyTorch: the face cache, the run folder, the files the config names.

aunet-train runs them before it loads PyTorch and ``train`` before it builds anything, so bad input costs
neither a model build nor a half-made run folder.
"""
from __future__ import annotations

import os
from pathlib import Path

from aunet.faces.cache import CacheError, FaceCache
from aunet.train.config import TrainConfig
from aunet.train.errors import TrainError

# backbone_weights values that name no file (aunet.model.backbone.fetch_pretrained)
_NOT_A_FILE = ("imagenet", "none")


def check_inputs(cfg: TrainConfig, data_dir: str | os.PathLike, out_dir: str | os.PathLike, resume: bool) -> FaceCache:
    """The face cache at ``data_dir``, once the run folder and the config's files are known to fit the run."""
    data_dir, out = Path(data_dir), Path(out_dir)
    if not data_dir.is_dir():
        raise TrainError(f"--data {data_dir} is not a folder (build a face cache with aunet-prep)")
    try:
        cache = FaceCache(data_dir)
    except (CacheError, OSError) as exc:
        raise TrainError(f"--data {data_dir}: {exc}") from None
    last = out / "last.pt"
    if resume and not last.is_file():
        raise TrainError(f"--resume: {last} does not exist (nothing to resume)")
    if not resume and last.exists():
        raise TrainError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
    weights = cfg.model_config.backbone_weights
    if not resume and weights not in _NOT_A_FILE and not Path(weights).is_file():  # a resume loads no ImageNet weights
        raise TrainError(f"--backbone-weights {weights} is not a file (ImageNet Xception weights: .pth or .safetensors)")
    if cfg.val_data and not Path(cfg.val_data).exists():
        raise TrainError(f"--val-data {cfg.val_data} does not exist (a labeled set aunet-eval reads: a face cache, a "
                         "path,label CSV, a Celeb-DF / FF++ / DFDC-Preview folder)")
    return cache
