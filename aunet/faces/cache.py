"""The on-disk face cache that ``aunet-prep`` writes and training / evaluation read (torch-free).

Layout (docs/preprocessing.md):
    DIR/cache.json                 crop size, CropSpec, frames per video, detector, faces policy, version
    DIR/records/<video_id>.json    one VideoRecord per input (status "ok" or the reason it was skipped)
    DIR/faces/<video_id>.npz       crops, landmarks, frame_indices, boxes, face_index, scores (status "ok")

Every file is written atomically, the npz before its record, so a record always means a finished video: a
rerun skips the videos that have one (resume). AU masks are not stored: ``aunet.faces.au_masks.au_masks`` rebuilds
them from the landmarks in a few ms, while storing them would make the cache ~15x larger.
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from aunet.io import atomic_path, atomic_write_text
from aunet.spec import CropSpec

CACHE_VERSION = 1
LABELS = {0: "real", 1: "fake", -1: "unknown"}
SPLITS = ("train", "val", "test", "")
STATUS_OK = "ok"
# Reasons a video is recorded without faces; none of them stops a run.
FAILURES = ("unreadable", "no_frames", "no_face", "error")


META_FILE = "cache.json"


def is_face_cache(path: str | Path) -> bool:
    """Whether ``path`` is a folder made by aunet-prep (it holds the cache's META_FILE)."""
    return (Path(path) / META_FILE).is_file()


class CacheError(ValueError):
    """A cache that is missing, malformed, or made with another crop size / crop spec."""


@dataclass(frozen=True)
class VideoRecord:
    video_id: str  # the input's path relative to the prep INPUT (posix), e.g. "real/clip01.mp4"
    source: str  # the input file as given to aunet-prep
    label: int  # 0 real, 1 fake, -1 unknown
    split: str  # "train" / "val" / "test" / ""
    method: str  # manipulation method ("" for real or unknown; FF++: Deepfakes, Face2Face, ...)
    num_faces: int  # face crops stored
    status: str  # "ok" or one of FAILURES
    num_frames: int = 0  # frames sampled and decoded
    frames_without_face: int = 0
    error: str = ""  # one line, for failures

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "VideoRecord":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class VideoFaces:
    crops: np.ndarray  # uint8 [N, S, S, 3] RGB
    landmarks: np.ndarray  # float32 [N, 68, 2] crop coordinates
    frame_indices: np.ndarray  # int64 [N] frame number in the video (0 for an image)
    boxes: np.ndarray  # float32 [N, 4] detector box xyxy, frame coordinates
    face_index: np.ndarray  # int64 [N] rank of the face in its frame (0 = largest)
    scores: np.ndarray  # float32 [N] detector scores

    FIELDS = ("crops", "landmarks", "frame_indices", "boxes", "face_index", "scores")

    def __len__(self) -> int:
        return int(self.crops.shape[0])

    @classmethod
    def empty(cls, size: int) -> "VideoFaces":
        return cls(
            crops=np.zeros((0, size, size, 3), np.uint8),
            landmarks=np.zeros((0, 68, 2), np.float32),
            frame_indices=np.zeros((0,), np.int64),
            boxes=np.zeros((0, 4), np.float32),
            face_index=np.zeros((0,), np.int64),
            scores=np.zeros((0,), np.float32),
        )


_SAFE = re.compile(r"[^A-Za-z0-9._+=@,-]")


def safe_id(video_id: str) -> str:
    """A video id usable as a relative path: posix parts, odd characters replaced, no '..'."""
    parts = [_SAFE.sub("_", p) for p in str(video_id).replace("\\", "/").split("/") if p not in ("", ".", "..")]
    if not parts:
        raise ValueError(f"empty video id {video_id!r}")
    return "/".join(parts)


def cache_meta(size: int, crop: CropSpec, **extra: Any) -> dict[str, Any]:
    return {"version": CACHE_VERSION, "crop_size": int(size), "crop": dataclasses.asdict(crop), **extra}


class CacheWriter:
    """Writes a cache; opening an existing cache checks that it was made with the same size and crop."""

    def __init__(self, root: str | Path, size: int, crop: CropSpec, **meta: Any):
        self.root = Path(root)
        self.size = int(size)
        self.crop = crop
        meta_path = self.root / META_FILE
        if meta_path.exists():
            FaceCache(self.root, size=self.size, crop=crop)  # raises CacheError on a mismatch
        else:
            atomic_write_text(meta_path, json.dumps(cache_meta(size, crop, **meta), indent=2, sort_keys=True))

    def record_path(self, video_id: str) -> Path:
        return self.root / "records" / (safe_id(video_id) + ".json")

    def faces_path(self, video_id: str) -> Path:
        return self.root / "faces" / (safe_id(video_id) + ".npz")

    def is_done(self, video_id: str) -> bool:
        return self.record_path(video_id).is_file()

    def write(self, record: VideoRecord, faces: VideoFaces | None = None) -> None:
        """Store a video's faces (for status "ok") and then its record, each atomically."""
        if record.ok:
            if faces is None or len(faces) != record.num_faces:
                raise ValueError(f"{record.video_id}: record says {record.num_faces} faces, got {0 if faces is None else len(faces)}")
            if faces.crops.shape[1:] != (self.size, self.size, 3):
                raise ValueError(f"{record.video_id}: crops are {faces.crops.shape[1:]}, the cache holds {self.size}px faces")
            with atomic_path(self.faces_path(record.video_id)) as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, **{k: getattr(faces, k) for k in VideoFaces.FIELDS})
        atomic_write_text(self.record_path(record.video_id), json.dumps(record.to_dict(), indent=1, sort_keys=True))


class FaceCache:
    """Reads a cache. Pass ``size`` / ``crop`` to require the ones the model was trained with."""

    def __init__(self, root: str | Path, size: int | None = None, crop: CropSpec | None = None):
        self.root = Path(root)
        meta_path = self.root / META_FILE
        if not meta_path.is_file():
            raise CacheError(f"{self.root} is not a face cache (no cache.json; make one with aunet-prep)")
        try:
            self.meta = json.loads(meta_path.read_text())
            self.size = int(self.meta["crop_size"])
            self.crop = CropSpec(**self.meta["crop"])
            version = int(self.meta.get("version", -1))
        except (ValueError, KeyError, TypeError) as exc:
            raise CacheError(f"{meta_path}: malformed cache metadata ({exc})") from None
        if version != CACHE_VERSION:
            raise CacheError(f"{meta_path}: cache version {version}, this build reads {CACHE_VERSION}")
        if size is not None and int(size) != self.size:
            raise CacheError(f"{self.root} holds {self.size}px crops, {size}px expected (re-run aunet-prep --size {size})")
        if crop is not None and crop != self.crop:
            raise CacheError(f"{self.root} was cut with {self.crop}, expected {crop}")

    def _records(self) -> Iterator[VideoRecord]:
        base = self.root / "records"
        for path in sorted(base.rglob("*.json")) if base.is_dir() else []:
            try:
                yield VideoRecord.from_dict(json.loads(path.read_text()))
            except (ValueError, TypeError) as exc:
                raise CacheError(f"{path}: malformed record ({exc})") from None

    def records(self) -> list[VideoRecord]:
        """Every input's record, failures included, sorted by video id."""
        return sorted(self._records(), key=lambda r: r.video_id)

    def videos(self, split: str | None = None, label: int | None = None) -> list[VideoRecord]:
        """The videos with faces (status "ok"), optionally of one split and / or label."""
        return [
            r for r in self.records()
            if r.ok and r.num_faces > 0 and (split is None or r.split == split) and (label is None or r.label == label)
        ]

    def failures(self) -> list[VideoRecord]:
        return [r for r in self.records() if not r.ok]

    def load(self, video_id: str) -> VideoFaces:
        path = self.root / "faces" / (safe_id(video_id) + ".npz")
        try:
            with np.load(path) as data:
                faces = VideoFaces(**{k: data[k] for k in VideoFaces.FIELDS})
        except FileNotFoundError:
            raise CacheError(f"{video_id!r} has no faces in {self.root}") from None
        except (ValueError, KeyError, OSError) as exc:
            raise CacheError(f"{path}: unreadable ({exc})") from None
        if faces.crops.shape[1:] != (self.size, self.size, 3):
            raise CacheError(f"{path}: crops are {faces.crops.shape[1:]}, the cache says {self.size}px")
        return faces
