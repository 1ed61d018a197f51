"""The face-detector interface: a ``Face`` (box and score in frame pixels) and the ``FaceDetector`` protocol.

Every detector returns its faces largest first; ``aunet.faces.detectors`` chooses one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol

import numpy as np


class DependencyError(RuntimeError):
    """An optional dependency or model file is missing (CLIs exit 3)."""


class DetectorModelError(ValueError):
    """A face-detector model this build cannot run: an unknown family, an input size that is not a multiple of
    the network's stride, outputs that do not fit its family (CLIs exit 2)."""


@dataclass(frozen=True)
class Face:
    box: np.ndarray  # float32 [4] x0, y0, x1, y1 in frame pixels
    score: float
    landmarks: Optional[np.ndarray] = None  # float32 [K, 2] frame pixels, in the detector's landmark_names order

    @property
    def size(self) -> float:
        """The box's longer side: the side the crop is cut from (CropSpec)."""
        x0, y0, x1, y1 = (float(v) for v in self.box)
        return max(0.0, x1 - x0, y1 - y0)

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = (float(v) for v in self.box)
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)


class FaceDetector(Protocol):
    name: str

    def detect(self, rgb: np.ndarray) -> list[Face]: ...


def largest_first(faces: list[Face]) -> list[Face]:
    return sorted(faces, key=lambda f: f.area, reverse=True)


def _check_rgb(rgb: np.ndarray) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError("expected an RGB uint8 image [H, W, 3]")
