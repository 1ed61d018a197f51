"""Results of the runtime: per face, per frame, per video, and their JSON form.

Aggregation follows the evaluation protocol (aunet.metrics): frame score = max over its faces, video score =
mean over the frames that have a face. A video without a face in any frame gets the verdict ``no_face``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from aunet.metrics import video_score

VERDICT_REAL, VERDICT_FAKE, VERDICT_NO_FACE, VERDICT_ERROR = "real", "fake", "no_face", "error"


def verdict_for(score: Optional[float], threshold: float) -> str:
    if score is None:
        return VERDICT_NO_FACE
    return VERDICT_FAKE if score >= threshold else VERDICT_REAL


@dataclass
class FacePredictions:
    """The model's answer for a batch of face crops."""

    scores: np.ndarray  # [N] fake probability (the spec's "score" output)
    region_maps: np.ndarray  # [N, h, w] per-patch fake probability on the spec's patch grid


@dataclass
class FaceResult:
    box: np.ndarray  # [4] float32 xyxy in frame pixels
    detector_score: float
    score: float  # fake probability
    region_map: np.ndarray  # [h, w] float16: where the model sees tampering, over the whole crop
    affine: np.ndarray  # [2, 3] frame -> crop pixels (maps the grid back onto the frame)

    def to_dict(self, grids: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "box": [round(float(v), 1) for v in self.box],
            "detector_score": round(float(self.detector_score), 4),
            "score": round(float(self.score), 5),
        }
        if grids:
            d["region_grid"] = np.round(self.region_map.astype(np.float32), 3).tolist()
            d["crop_affine"] = np.round(self.affine, 5).tolist()
        return d


@dataclass
class FrameResult:
    index: int
    time_s: float
    faces: list[FaceResult]

    @property
    def score(self) -> Optional[float]:
        """Max over faces (one forged face makes a forged frame); None without a face."""
        return max((f.score for f in self.faces), default=None)

    def to_dict(self, grids: bool = True) -> dict[str, Any]:
        s = self.score
        return {
            "index": self.index,
            "time_s": round(self.time_s, 3),
            "score": None if s is None else round(s, 5),
            "faces": [f.to_dict(grids) for f in self.faces],
        }


@dataclass
class VideoResult:
    source: str
    threshold: float
    frames: list[FrameResult] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # fps, size, sampling, backend, detector, spec

    @property
    def score(self) -> Optional[float]:
        scored = [f.score for f in self.frames if f.score is not None]
        return video_score(scored) if scored else None

    @property
    def verdict(self) -> str:
        return verdict_for(self.score, self.threshold)

    @property
    def frames_with_face(self) -> int:
        return sum(1 for f in self.frames if f.faces)

    def to_dict(self, grids: bool = True) -> dict[str, Any]:
        s = self.score
        return {
            "source": self.source,
            "verdict": self.verdict,
            "score": None if s is None else round(s, 5),
            "threshold": self.threshold,
            "frames_analysed": len(self.frames),
            "frames_with_face": self.frames_with_face,
            "faces": sum(len(f.faces) for f in self.frames),
            "frame_scores": [None if f.score is None else round(f.score, 5) for f in self.frames],
            "frames": [f.to_dict(grids) for f in self.frames],
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            **self.info,
        }


def error_record(source: str, message: str) -> dict[str, Any]:
    """The JSON of an input that could not be analysed (batch runs record it and go on)."""
    return {"source": source, "verdict": VERDICT_ERROR, "score": None, "error": message}
