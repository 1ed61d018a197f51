"""Scoring a labeled set: a ``Scorer`` from a checkpoint or an exported model, and the SBI video protocol over a
face cache (frame score = max over faces, video score = mean over frames; faceless videos counted)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np

from aunet.backends import CHECKPOINT_SUFFIXES, DEVICES, ENGINE_SUFFIXES, ONNX_SUFFIXES
from aunet.cli import EXIT_MISSING
from aunet.config import ModelConfig
from aunet.evaluate.datasets import EvalError, open_labeled
from aunet.metrics import binary_metrics, video_score

Scorer = Callable[[np.ndarray], np.ndarray]
EXPORTED_SUFFIXES = ONNX_SUFFIXES + ENGINE_SUFFIXES
TORCH_DEVICES = ("auto", "cpu", "cuda")
EXPORT_HINT = "export a trained checkpoint with: aunet-export onnx --ckpt RUN/best.pt"


def model_kind(path: Path, device: str = "auto") -> str:
    """"pytorch" (a checkpoint) or "exported" (.onnx / .plan / .engine), checked before anything loads;
    anything else is refused with what to give instead."""
    suffix = path.suffix.lower()
    if path.is_dir():
        best = path / "best.pt"
        hint = f"give {best}" if best.is_file() else "give a checkpoint in it (RUN/best.pt)"
        raise EvalError(f"--ckpt {path} is a folder: {hint}, or an exported .onnx / .plan / .engine")
    if suffix in EXPORTED_SUFFIXES:
        if not path.is_file():
            raise EvalError(f"model not found: {path}")
        if device not in DEVICES:
            raise EvalError(f"--device {device!r}: an exported model runs on one of {', '.join(DEVICES)}")
        return "exported"
    if suffix not in CHECKPOINT_SUFFIXES:
        raise EvalError(f"--ckpt {path} is neither a checkpoint (.pt from aunet-train) nor an exported model "
                        f"(.onnx / .plan / .engine from aunet-export); {EXPORT_HINT}")
    if not path.is_file():
        raise EvalError(f"checkpoint not found: {path}")
    if device not in TORCH_DEVICES:
        raise EvalError(f"--device {device} runs exported models; a checkpoint runs on {', '.join(TORCH_DEVICES)} "
                        f"(or {EXPORT_HINT})")
    return "pytorch"


def load_scorer(path: Path, device: str = "auto", batch_size: int = 64) -> tuple[Scorer, ModelConfig, Any, dict]:
    """(scorer, model config, crop spec, provenance) of a PyTorch checkpoint or an ONNX / TensorRT model."""
    if model_kind(path, device) == "exported":
        return runtime_scorer(path, device, batch_size)
    return checkpoint_scorer(path, device, batch_size)


def torch_scorer(model, device=None, amp: bool = False, batch_size: int = 64) -> Scorer:
    """A Scorer from an AUNet module (or a checkpoint path)."""
    import torch

    from aunet.model import autocast, autocast_dtype
    from aunet.model.checkpoint import load_model

    if not isinstance(model, torch.nn.Module):
        model = load_model(model)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model = model.to(device)
    amp_dtype = autocast_dtype(device, amp)

    @torch.inference_mode()
    def score(crops: np.ndarray) -> np.ndarray:
        was_training = model.training
        model.eval()
        out = []
        for i in range(0, len(crops), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(crops[i : i + batch_size])).to(device)
            x = x.permute(0, 3, 1, 2).float().div_(255)
            with autocast(device, amp_dtype):
                out.append(model(x).score.float().cpu().numpy())
        model.train(was_training)
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    return score


def checkpoint_scorer(ckpt: Path, device: str, batch_size: int) -> tuple[Scorer, ModelConfig, Any, dict]:
    """A PyTorch checkpoint (aunet-train's RUN/best.pt) as a Scorer, AMP on CUDA."""
    from aunet.spec import CropSpec

    try:
        import torch
    except ImportError:
        raise EvalError("PyTorch is not installed (pip install 'aunet[train]')", EXIT_MISSING) from None
    from aunet.model.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint

    try:
        data = load_checkpoint(ckpt)  # weights only: a checkpoint from elsewhere cannot run code here
        model = model_from_checkpoint(data, ckpt)
    except CheckpointError as exc:
        raise EvalError(str(exc)) from None
    cfg = model.cfg
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EvalError(f"--device {device}: CUDA is not available", EXIT_MISSING)
    train_cfg = data.get("train_config", {}) or {}
    info = {"checkpoint": str(ckpt), "backend": "pytorch", "config": cfg.name, "step": data.get("step"),
            "protocol": train_cfg.get("protocol", "cross")}
    return torch_scorer(model.eval(), device, amp=device.startswith("cuda"), batch_size=batch_size), cfg, CropSpec(), info


def runtime_scorer(path: Path, device: str, batch_size: int) -> tuple[Scorer, ModelConfig, Any, dict]:
    """An exported model through the runtime's backends (ONNX Runtime, TensorRT): INT8 / FP16 accuracy is
    measured on the very data, crops and protocol of the PyTorch checkpoint."""
    from aunet.backends import BackendError, BackendUnavailable, open_backend
    from aunet.spec import SpecError

    if not path.is_file():
        raise EvalError(f"model not found: {path}")
    try:
        backend = open_backend(path, device)
    except BackendUnavailable as exc:
        raise EvalError(str(exc), EXIT_MISSING) from None
    except SpecError as exc:
        raise EvalError(f"{exc}; {EXPORT_HINT}") from None
    except (BackendError, OSError) as exc:
        raise EvalError(f"{path}: {exc}") from None
    spec = backend.spec

    def score(crops: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(crops), batch_size):
            x = crops[i : i + batch_size].transpose(0, 3, 1, 2).astype(np.float32) / 255.0
            out.append(np.asarray(backend.infer(x)["score"], dtype=np.float64).reshape(-1))
        return np.concatenate(out) if out else np.zeros(0)

    info = {"checkpoint": str(path), "backend": backend.name, "precision": spec.precision, "config": spec.config.name,
            "step": None, "protocol": "cross"}
    return score, spec.config, spec.crop, info


def _fit_crops(crops: np.ndarray, size: int) -> np.ndarray:
    if crops.shape[1] == size:
        return crops
    import cv2

    interp = cv2.INTER_AREA if crops.shape[1] > size else cv2.INTER_LINEAR
    return np.stack([cv2.resize(c, (size, size), interpolation=interp) for c in crops])


def evaluate_cache(
    cache, scorer: Scorer, img_size: int, threshold: float = 0.5, no_face_score: float = 0.5, progress=None
) -> dict[str, Any]:
    """Score every labeled video of a FaceCache -> the report (metrics, counts, per-video scores).

    A cache that has a "test" split is evaluated on that split only (a whole prepared FF++, say)."""
    videos, frame_labels, frame_values, skipped = [], [], [], []
    counts = {"videos": 0, "videos_scored": 0, "videos_without_faces": 0, "unlabeled_videos": 0,
              "frames_scored": 0, "frames_without_face": 0, "faces": 0}
    records = cache.records()  # failures too: they are counted, never dropped silently
    split = "test" if any(r.split == "test" for r in records) else None
    records = [r for r in records if split is None or r.split == split]
    task = progress.add_task("scoring", total=len(records)) if progress is not None else None
    for rec in records:
        if progress is not None:
            progress.advance(task)
        if rec.label not in (0, 1):
            counts["unlabeled_videos"] += 1
            continue
        counts["videos"] += 1
        frames_seen = int(rec.num_frames)
        row = {"video_id": rec.video_id, "label": int(rec.label), "method": rec.method or "", "status": rec.status,
               "frames": frames_seen, "frames_scored": 0, "faces": 0, "score": no_face_score}
        if rec.ok and rec.num_faces > 0:
            faces = cache.load(rec.video_id)
            scores = np.asarray(scorer(_fit_crops(faces.crops, img_size)), dtype=np.float64)
            per_frame: dict[int, float] = {}
            for frame, s in zip(np.asarray(faces.frame_indices).tolist(), scores.tolist()):
                per_frame[frame] = max(per_frame.get(frame, -math.inf), s)
            row.update(frames_scored=len(per_frame), faces=int(len(scores)), score=video_score(per_frame.values()))
            frame_labels += [rec.label] * len(per_frame)
            frame_values += list(per_frame.values())
            counts["videos_scored"] += 1
            counts["faces"] += int(len(scores))
            counts["frames_scored"] += len(per_frame)
        else:
            counts["videos_without_faces"] += 1
            skipped.append({"video_id": rec.video_id, "status": rec.status, "error": rec.error})
        counts["frames_without_face"] += int(rec.frames_without_face)
        videos.append(row)
    if not videos:
        raise EvalError("the labeled set has no labeled videos")
    labels = np.array([v["label"] for v in videos])
    scores = np.array([v["score"] for v in videos])
    report = {
        "split": split or "all",
        "threshold": threshold,
        "no_face_score": no_face_score,
        "frame": binary_metrics(frame_labels, frame_values, threshold),
        "video": binary_metrics(labels, scores, threshold),
        "counts": counts,
        "skipped": skipped,
        "per_method": _per_method(videos, threshold),
        "videos": videos,
    }
    report["_curves"] = {"frame": (frame_labels, frame_values), "video": (labels.tolist(), scores.tolist())}
    return report


def _per_method(videos: list[dict], threshold: float) -> dict[str, dict]:
    """Video AUC per forgery method against all reals (the paper's Tables 1-2 columns)."""
    methods = sorted({v["method"] for v in videos if v["label"] == 1 and v["method"]})
    reals = [v for v in videos if v["label"] == 0]
    out = {}
    for m in methods:
        subset = reals + [v for v in videos if v["label"] == 1 and v["method"] == m]
        out[m] = binary_metrics([v["label"] for v in subset], [v["score"] for v in subset], threshold)
    return out


def evaluate_source(source, scorer: Scorer, cfg: ModelConfig, cache_dir: Path, threshold: float = 0.5,
                    no_face_score: float = 0.5, frames: int = 32, compression: str = "c23", console=None,
                    progress=None) -> dict:
    """open_labeled + evaluate_cache (the trainer's per-epoch labeled validation uses this too)."""
    cache = open_labeled(source, Path(cache_dir), cfg.img_size, frames, compression, console)
    return evaluate_cache(cache, scorer, cfg.img_size, threshold, no_face_score, progress)


# ----------------------------------------------------------------------------------------------------------
