"""The face policy: which detected faces of a frame are scored (torch-free).

One function, ``apply_face_policy``, used alike by prep (``aunet-prep``: the faces cut into the cache) and the
runtime (the faces scored), so training, evaluation and deployment see the same faces. A frame's score is the
max over its faces, so a false detection that survives here (a name badge, a face in a poster) can flip it.

The policy travels with the face cache (``cache.json``: ``face_policy``) and with the model spec
(``ModelSpec.faces["policy"]``); the runtime applies the spec's policy unless it is given one.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from aunet.faces.base import Face, largest_first


@dataclass(frozen=True)
class FacePolicy:
    """``min_score``: the detector's score threshold (None: the detector's own; dlib's scores are SVM margins,
    the learned detectors' are probabilities). ``min_size``: smallest face kept, in pixels of the box's longer
    side (the side the crop is cut from). ``min_relative_size``: smallest face kept as a fraction of the largest
    face of the same frame (0.3 drops a badge or a background face a third the size of the subject's).
    ``max_faces``: the largest N faces of a frame (None: all)."""

    min_score: Optional[float] = None
    min_size: float = 0.0
    min_relative_size: float = 0.0
    max_faces: Optional[int] = None

    def __post_init__(self):
        if self.min_size < 0:
            raise ValueError(f"min_size must be >= 0 px, got {self.min_size}")
        if not 0.0 <= self.min_relative_size <= 1.0:
            raise ValueError(f"min_relative_size must be in [0, 1], got {self.min_relative_size}")
        if self.max_faces is not None and self.max_faces < 1:
            raise ValueError(f"max_faces must be >= 1 (or None for all), got {self.max_faces}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Optional[Mapping[str, Any]]) -> "FacePolicy":
        """A policy from its dict (missing keys: the defaults, unknown keys ignored; None: the default policy)."""
        if not data:
            return cls()
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        try:
            return cls(**known)
        except TypeError as exc:
            raise ValueError(f"malformed face policy: {exc}") from None

    def apply(self, faces: list[Face]) -> list[Face]:
        return apply_face_policy(faces, self)


def apply_face_policy(faces: list[Face], policy: FacePolicy) -> list[Face]:
    """The faces of one frame that the policy keeps, largest first: score threshold, then absolute and
    relative size (relative to the largest face that passed the threshold), then the largest ``max_faces``."""
    kept = [f for f in faces if policy.min_score is None or f.score >= policy.min_score]
    kept = largest_first(kept)
    if not kept:
        return []
    floor = max(policy.min_size, policy.min_relative_size * kept[0].size)
    kept = [f for f in kept if f.size >= floor]
    return kept[:policy.max_faces] if policy.max_faces is not None else kept


def spec_faces(cache_meta: Mapping[str, Any]) -> dict[str, Any]:
    """What a model spec records about faces (``ModelSpec.faces``) from the metadata of the face cache it was
    trained on: the detector's name and the face policy (an empty policy for caches made before it was kept)."""
    faces: dict[str, Any] = {"policy": FacePolicy.from_dict(cache_meta.get("face_policy")).to_dict()}
    if cache_meta.get("detector"):
        faces["detector"] = str(cache_meta["detector"])
    return faces
