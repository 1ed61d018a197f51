"""Results of the runtime: per face, per frame, per video, and their JSON form.

Aggregation follows the evaluation protocol (aunet.metrics): frame score = max over its faces, video score =
mean over the frames that have a face. A video without a face in any frame gets the verdict ``no_face``.
The video's aggregates are running sums (``Tally``), so a live source that is scored for days keeps its verdict
without keeping its frames.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from aunet.metrics import video_score

VERDICT_REAL, VERDICT_FAKE, VERDICT_NO_FACE, VERDICT_ERROR = "real", "fake", "no_face", "error"
# Version of every record aunet-infer writes (JSON, JSONL, CSV); raised when a field changes meaning or goes.
SCHEMA_VERSION = 1


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
class Tally:
    """Running aggregates of scored frames: counts and the mean frame score (the video score), O(1) memory."""

    frames: int = 0
    frames_with_face: int = 0
    faces: int = 0
    score_sum: float = 0.0
    max_score: Optional[float] = None

    def add(self, frame: FrameResult) -> None:
        self.frames += 1
        self.faces += len(frame.faces)
        s = frame.score
        if s is not None:
            self.frames_with_face += 1
            self.score_sum += s
            self.max_score = s if self.max_score is None else max(self.max_score, s)

    @property
    def score(self) -> Optional[float]:
        """Mean over the frames that have a face (``aunet.metrics.video_score``); None without one."""
        return self.score_sum / self.frames_with_face if self.frames_with_face else None


@dataclass
class VideoResult:
    """One input's result. ``frames`` holds every FrameResult unless ``keep_frames`` is False (a live source:
    the frames went to ``on_frame`` and only the running aggregates stay). Add frames with ``add``."""

    source: str
    threshold: float
    frames: list[FrameResult] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # fps, size, sampling, backend, detector, spec
    keep_frames: bool = True
    tally: Tally = field(default_factory=Tally, repr=False)

    def __post_init__(self) -> None:
        for f in self.frames:
            self.tally.add(f)

    def add(self, frame: FrameResult) -> None:
        self.tally.add(frame)
        if self.keep_frames:
            self.frames.append(frame)

    @property
    def score(self) -> Optional[float]:
        if self.keep_frames:  # the protocol's own function on the kept frames
            scored = [f.score for f in self.frames if f.score is not None]
            return video_score(scored) if scored else None
        return self.tally.score

    @property
    def verdict(self) -> str:
        return verdict_for(self.score, self.threshold)

    @property
    def frames_analysed(self) -> int:
        return self.tally.frames

    @property
    def frames_with_face(self) -> int:
        return self.tally.frames_with_face

    def to_dict(self, grids: bool = True, frames: Optional[bool] = None) -> dict[str, Any]:
        """The JSON record; ``frames`` (default: when kept) includes ``frame_scores`` and ``frames``."""
        s = self.score
        d: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "source": self.source,
            "verdict": self.verdict,
            "score": None if s is None else round(s, 5),
            "threshold": self.threshold,
            "frames_analysed": self.tally.frames,
            "frames_with_face": self.tally.frames_with_face,
            "faces": self.tally.faces,
        }
        if self.keep_frames if frames is None else frames:
            d["frame_scores"] = [None if f.score is None else round(f.score, 5) for f in self.frames]
            d["frames"] = [f.to_dict(grids) for f in self.frames]
        d["timings"] = {k: round(v, 4) for k, v in self.timings.items()}
        d.update(self.info)
        return d


def error_record(source: str, message: str, partial: Optional[VideoResult] = None, grids: bool = True) -> dict[str, Any]:
    """The JSON of an input that could not be analysed (batch runs record it and go on). ``partial``: what was
    scored before it failed (a stream that dropped), kept in the record with ``verdict`` "error"."""
    record: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "source": source}
    if partial is not None:
        record.update(partial.to_dict(grids))
    record.update({"verdict": VERDICT_ERROR, "error": message})
    record.setdefault("score", None)
    return record
