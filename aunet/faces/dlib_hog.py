"""dlib's HOG frontal-face detector and its 68-point landmark predictor (torch-free).

The HOG detector needs no model file; it is the fallback where no learned detector is given. The landmark
model is the one face-recognition-models ships."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import cv2
import numpy as np

from aunet.faces.base import DependencyError, Face, _check_rgb, largest_first


def _import_dlib():
    try:
        import dlib
    except ImportError:
        raise DependencyError("dlib is not installed (pip install 'aunet[train]' or dlib-bin)") from None
    return dlib


class DlibHogDetector:
    """dlib's HOG + linear SVM frontal-face detector (built into dlib, no model file).

    HOG finds faces of about 80 px and more; frames are first shrunk so that their longer side is at most
    ``max_side`` (speed: a 1080p frame costs ~10x a 640 px one) and small images are upsampled once.
    Boxes are dlib's: tight, from the brows to the chin (RetinaFace's boxes reach further up the forehead).
    ``min_score`` 0.3 drops the weak detections (SVM margin below 0.3) that are mostly not faces.
    """

    name = "dlib"

    def __init__(self, max_side: int = 640, min_score: float = 0.3, upsample_below: int = 360):
        self._detector = _import_dlib().get_frontal_face_detector()
        self.max_side = max_side
        self.min_score = min_score
        self.upsample_below = upsample_below

    def detect(self, rgb: np.ndarray) -> list[Face]:
        _check_rgb(rgb)
        h, w = rgb.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        small = rgb if scale == 1.0 else cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        upsample = 1 if max(small.shape[:2]) < self.upsample_below else 0
        rects, scores, _ = self._detector.run(np.ascontiguousarray(small), upsample, self.min_score)
        faces = []
        for r, s in zip(rects, scores):
            box = np.array([r.left(), r.top(), r.right() + 1, r.bottom() + 1], dtype=np.float32) / scale
            box[[0, 2]] = box[[0, 2]].clip(0, w)
            box[[1, 3]] = box[[1, 3]].clip(0, h)
            if box[2] > box[0] and box[3] > box[1]:
                faces.append(Face(box=box, score=float(s)))
        return largest_first(faces)


def default_predictor_path() -> Path:
    """dlib's 68-point predictor as shipped by face-recognition-models (located without importing it, since
    its __init__ pulls in pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise DependencyError("face-recognition-models is not installed; it ships dlib's 68-point landmark model")
    return Path(list(spec.submodule_search_locations)[0]) / "models" / "shape_predictor_68_face_landmarks.dat"


class LandmarkPredictor:
    """dlib's 68-point shape predictor (iBUG 300-W layout: jaw 0-16, brows 17-26, nose 27-35, eyes 36-47,
    mouth 48-67; "right" is the subject's right, i.e. the image's left)."""

    def __init__(self, path: str | os.PathLike | None = None):
        path = Path(path) if path is not None else default_predictor_path()
        if not path.is_file():
            raise DependencyError(f"landmark model not found: {path}")
        self._predictor = _import_dlib().shape_predictor(str(path))

    def predict(self, rgb: np.ndarray, box) -> np.ndarray:
        """68 landmarks float32 [68, 2] (frame pixel coordinates) for a face box xyxy."""
        _check_rgb(rgb)
        import dlib

        x0, y0, x1, y1 = (int(round(float(v))) for v in np.asarray(box)[:4])
        shape = self._predictor(np.ascontiguousarray(rgb), dlib.rectangle(x0, y0, x1 - 1, y1 - 1))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
