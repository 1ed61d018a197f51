"""Scoring during training: the model's fake scores on a loader, and the optional labeled set (--val-data)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from aunet.config import ModelConfig
from aunet.model import autocast
from aunet.train.errors import TrainError


@torch.no_grad()
def predict(model, loader, device: torch.device, amp_dtype: Optional[torch.dtype] = None) -> tuple[np.ndarray, np.ndarray]:
    """(labels, fake scores) of every image the loader yields, model in eval mode."""
    was_training = model.training
    model.eval()
    labels, scores = [], []
    for batch in loader:
        images = batch["images"].to(device).float().div_(255)
        with autocast(device, amp_dtype):
            out = model(images)
        labels.append(batch["labels"].numpy())
        scores.append(out.score.float().cpu().numpy())
    model.train(was_training)
    if not labels:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    return np.concatenate(labels), np.concatenate(scores)


def labeled_set_metrics(source: str, model, model_cfg: ModelConfig, device: torch.device, amp: bool,
                        cache_dir: Path) -> dict[str, float]:
    """Frame and video AUC on a labeled set (anything aunet-eval reads), its faces cached in ``cache_dir``."""
    from aunet.evaluate import EvalError, evaluate_source, torch_scorer

    try:
        report = evaluate_source(source, torch_scorer(model, device, amp), model_cfg, cache_dir)
    except EvalError as exc:
        raise TrainError(f"--val-data: {exc}", exc.code) from None
    return {"labeled_frame_auc": report["frame"]["auc"], "labeled_video_auc": report["video"]["auc"]}
