"""Choosing a face detector: the one place prep and the runtime build their detectors.

``make_detector`` is prep's choice ("auto": RetinaFace in PyTorch when its weights are there, dlib HOG
otherwise); ``make_face_detector`` is the runtime's (the RetinaFace ONNX when given, dlib HOG otherwise)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from aunet.faces.base import DependencyError, FaceDetector
from aunet.faces.dlib_hog import DlibHogDetector
from aunet.faces.retinaface import RetinaFaceOnnx


DETECTORS = ("auto", "retinaface", "dlib")


# Where "auto" looks for RetinaFace weights when none are given (Pytorch_Retinaface's file names).
RETINAFACE_WEIGHTS_ENV = "AUNET_RETINAFACE_WEIGHTS"


def find_retinaface_weights(weights: str | os.PathLike | None = None) -> Path | None:
    """The RetinaFace weight file to use: the given one, else $AUNET_RETINAFACE_WEIGHTS, else None."""
    candidate = weights if weights is not None else os.environ.get(RETINAFACE_WEIGHTS_ENV)
    if not candidate:
        return None
    path = Path(candidate).expanduser()
    if not path.is_file():
        raise DependencyError(f"RetinaFace weights not found: {path}")
    return path


def make_detector(kind: str = "auto", weights: str | os.PathLike | None = None, **kwargs) -> FaceDetector:
    """A face detector: "retinaface" (needs torch and a weight file), "dlib" (HOG), or "auto" (RetinaFace
    when weights are given or $AUNET_RETINAFACE_WEIGHTS names a file, dlib otherwise)."""
    if kind not in DETECTORS:
        raise ValueError(f"unknown detector {kind!r}; choose one of {', '.join(DETECTORS)}")
    if kind == "dlib":
        return DlibHogDetector(**kwargs)
    path = find_retinaface_weights(weights)
    if path is None:
        if kind == "retinaface":
            raise DependencyError(
                f"RetinaFace needs a weight file (Pytorch_Retinaface's mobilenet0.25_Final.pth or Resnet50_Final.pth): "
                f"pass --retinaface-weights or set {RETINAFACE_WEIGHTS_ENV}"
            )
        return DlibHogDetector(**kwargs)
    try:
        from aunet.faces.retinaface_net import RetinaFaceDetector  # imports torch

        return RetinaFaceDetector(path, **kwargs)
    except ImportError as exc:
        raise DependencyError(f"RetinaFace needs torch and torchvision ({exc}); pip install 'aunet[train]'") from None


def make_face_detector(
    model: Optional[str | Path] = None, max_side: Optional[int] = None, device: str = "auto"
) -> FaceDetector:
    """dlib HOG (frames shrunk to ``max_side`` first) without a model; the RetinaFace ONNX when one is given."""
    if model is None:
        return DlibHogDetector(max_side=max_side) if max_side else DlibHogDetector()
    if Path(model).suffix.lower() != ".onnx":
        raise ValueError(f"face detector model must be an .onnx from `aunet-export detector`, got {model}")
    return RetinaFaceOnnx(model, device)
