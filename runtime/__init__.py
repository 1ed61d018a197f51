"""Torch-free inference runtime for edge boxes (installed as ``aunet.runtime``).

``Detector("model.onnx").predict_video("clip.mp4")`` (see aunet.runtime.pipeline); ``aunet-infer`` is its CLI.
Submodules load on first use, so importing the package costs nothing.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from aunet.lazy import lazy_getattr

__all__ = ["Detector", "Sampling", "VideoResult", "open_backend"]

_LAZY = {
    "Detector": "aunet.runtime.pipeline",
    "Sampling": "aunet.runtime.sources",
    "VideoResult": "aunet.runtime.results",
    "open_backend": "aunet.backends",
}

if TYPE_CHECKING:  # pragma: no cover
    from aunet.backends import open_backend
    from .pipeline import Detector
    from .results import VideoResult
    from .sources import Sampling

__getattr__ = lazy_getattr(__name__, _LAZY)
