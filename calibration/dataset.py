"""The INT8 calibration set: face crops made exactly as training and the runtime make them, stored as one file
artifact (``calib.npz`` + ``calib.json`` provenance) that quantization and engine builds read without torch and
without the dataset."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection

import numpy as np

from aunet.faces.cache import is_face_cache
from aunet.io import atomic_write_bytes, atomic_write_text
from aunet.spec import CropSpec, ModelSpec

FORMAT = "aunet-calibration"
VERSION = 1
DEFAULT_SIZE = 500
WARN_BELOW = 300  # fewer crops than this calibrate, but ranges get noisy
MIN_IMAGES = 8  # below this a calibration is meaningless


class CalibrationError(ValueError):
    """A calibration set that is missing, empty, corrupt, or made for another model spec."""


def paths_for(path: str | Path) -> tuple[Path, Path]:
    """``calib.npz`` / ``calib.json`` from either name (or from a stem)."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".npz", ".json") else path
    return stem.with_suffix(".npz"), stem.with_suffix(".json")


@dataclass
class CalibrationSet:
    """Crops as uint8 RGB [N, S, S, 3] (4x smaller than float32 and exact), with their provenance."""

    images: np.ndarray
    crop: CropSpec
    color: str = "RGB"
    value_range: tuple[float, float] = (0.0, 1.0)
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        imgs = self.images
        if not isinstance(imgs, np.ndarray) or imgs.dtype != np.uint8 or imgs.ndim != 4 or imgs.shape[-1] != 3:
            shape = getattr(imgs, "shape", None)
            raise CalibrationError(f"calibration images must be uint8 [N, S, S, 3] RGB crops, got {getattr(imgs, 'dtype', type(imgs))} {shape}")
        if imgs.shape[1] != imgs.shape[2]:
            raise CalibrationError(f"calibration crops must be square, got {imgs.shape[1]}x{imgs.shape[2]}")
        n = len(imgs)
        if n == 0:
            raise CalibrationError("the calibration set is empty (no face crops)")
        if n < MIN_IMAGES:
            raise CalibrationError(f"the calibration set has {n} crops; at least {MIN_IMAGES} are needed ({DEFAULT_SIZE} recommended)")
        if n < WARN_BELOW:
            warnings.warn(f"calibration set has only {n} crops (< {WARN_BELOW}): INT8 ranges may be noisy; "
                          f"{DEFAULT_SIZE}+ crops from many videos are recommended", stacklevel=2)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def size(self) -> int:
        return int(self.images.shape[1])

    def check_spec(self, spec: ModelSpec) -> None:
        """Raise CalibrationError unless these crops are what the model's spec says its input is."""
        problems = []
        if self.size != spec.input_size:
            problems.append(f"crop size {self.size} != model input {spec.input_size}")
        if self.crop != spec.crop:
            problems.append(f"crop {self.crop} != model's {spec.crop}")
        if self.color != spec.color:
            problems.append(f"colour {self.color} != {spec.color}")
        if tuple(self.value_range) != tuple(spec.value_range):
            problems.append(f"value range {self.value_range} != {spec.value_range}")
        if problems:
            raise CalibrationError("calibration set made for another model spec: " + "; ".join(problems))

    def model_inputs(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """float32 NCHW in the spec's value range, as the model's ``image`` input wants."""
        lo, hi = self.value_range
        x = self.images[start:stop].astype(np.float32).transpose(0, 3, 1, 2) / 255.0
        return x * (hi - lo) + lo if (lo, hi) != (0.0, 1.0) else x

    def save(self, path: str | Path) -> Path:
        """Write ``.npz`` then ``.json`` (which holds the npz's sha256), each atomically."""
        npz_path, json_path = paths_for(path)
        buf = io.BytesIO()
        np.savez_compressed(buf, images=self.images)
        data = buf.getvalue()
        atomic_write_bytes(npz_path, data)
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "num_images": len(self),
            "input_size": self.size,
            "crop": dataclasses.asdict(self.crop),
            "color": self.color,
            "value_range": list(self.value_range),
            "storage": "uint8 NHWC RGB",
            "npz_sha256": hashlib.sha256(data).hexdigest(),
            "provenance": self.provenance,
        }
        atomic_write_text(json_path, json.dumps(meta, indent=2, sort_keys=True))
        return npz_path

    @classmethod
    def load(cls, path: str | Path, spec: ModelSpec | None = None) -> "CalibrationSet":
        npz_path, json_path = paths_for(path)
        if not json_path.is_file() or not npz_path.is_file():
            raise CalibrationError(f"calibration set not found: need both {npz_path} and {json_path}")
        try:
            meta = json.loads(json_path.read_text())
            if meta.get("format") != FORMAT or meta.get("version") != VERSION:
                raise CalibrationError(f"{json_path} is not an aunet calibration set (format/version)")
            data = npz_path.read_bytes()
            if hashlib.sha256(data).hexdigest() != meta["npz_sha256"]:
                raise CalibrationError(f"{npz_path} does not match {json_path} (changed or truncated)")
            with np.load(io.BytesIO(data)) as z:
                images = z["images"]
            calib = cls(images=images, crop=CropSpec(**meta["crop"]), color=meta["color"],
                        value_range=tuple(meta["value_range"]), provenance=meta.get("provenance", {}))
        except CalibrationError:
            raise
        except (KeyError, TypeError, ValueError, OSError) as exc:
            raise CalibrationError(f"unreadable calibration set {npz_path}: {exc}") from None
        if spec is not None:
            calib.check_spec(spec)
        return calib

    @classmethod
    def from_array(cls, images: np.ndarray, spec: ModelSpec, **provenance: Any) -> "CalibrationSet":
        """From crops already made: uint8 [N, S, S, 3] RGB, or float32 [N, 3, S, S] in the spec's value range."""
        images = np.asarray(images)
        if images.dtype != np.uint8:
            lo, hi = spec.value_range
            if images.ndim != 4 or images.shape[1] != 3:
                raise CalibrationError(f"float calibration inputs must be [N, 3, S, S], got {images.shape}")
            if not np.isfinite(images).all() or images.min() < lo or images.max() > hi:
                raise CalibrationError(f"float calibration inputs must lie in the model's value range [{lo}, {hi}], "
                                       f"got [{float(np.nanmin(images)):.3g}, {float(np.nanmax(images)):.3g}]")
            images = np.round((images.transpose(0, 2, 3, 1) - lo) / (hi - lo) * 255).astype(np.uint8)
        calib = cls(images=np.ascontiguousarray(images), crop=spec.crop, color=spec.color,
                    value_range=tuple(spec.value_range), provenance=dict(provenance))
        calib.check_spec(spec)
        return calib


def spread_sample(counts: list[int], n: int, rng: np.random.Generator) -> list[list[int]]:
    """Which faces to take from each video so that ``n`` crops spread over as many videos as possible:
    round-robin over the videos in random order, evenly spaced faces within a video."""
    quota = [0] * len(counts)
    order = rng.permutation(len(counts))
    remaining = min(n, sum(counts))
    while remaining > 0:
        for v in order:
            if remaining == 0:
                break
            if quota[v] < counts[v]:
                quota[v] += 1
                remaining -= 1
    return [np.linspace(0, c - 1, q).round().astype(int).tolist() if q else [] for c, q in zip(counts, quota, strict=True)]


def open_cache(cache_dir: str | Path, spec: ModelSpec, split: str | None = None,
               video_ids: Collection[str] | None = None):
    """(FaceCache, its videos with faces): the cache must have been cut with the model's size and CropSpec.
    ``video_ids``: only these videos (e.g. one side of a held-out split)."""
    from aunet.faces.cache import CacheError, FaceCache

    try:
        cache = FaceCache(cache_dir, size=spec.input_size, crop=spec.crop)
        videos = cache.videos(split=split)
    except CacheError as exc:
        raise CalibrationError(str(exc)) from None
    if video_ids is not None:
        wanted = set(video_ids)
        videos = [v for v in videos if v.video_id in wanted]
    if not videos:
        raise CalibrationError(f"{cache_dir} holds no face crops{f' in split {split!r}' if split else ''}"
                               f"{' in the chosen videos' if video_ids is not None else ''}")
    return cache, videos


def from_cache(cache_dir: str | Path, spec: ModelSpec, n: int = DEFAULT_SIZE, seed: int = 0,
               split: str | None = None, video_ids: Collection[str] | None = None) -> CalibrationSet:
    """Crops from an ``aunet-prep`` cache (which must have been cut with the model's size and CropSpec);
    ``video_ids``: only from these videos."""
    cache, videos = open_cache(cache_dir, spec, split, video_ids)
    picks = spread_sample([v.num_faces for v in videos], n, np.random.default_rng(seed))
    crops, sources = [], {}
    for video, rows in zip(videos, picks, strict=True):
        if rows:
            crops.append(cache.load(video.video_id).crops[rows])
            sources[video.video_id] = len(rows)
    return CalibrationSet(
        images=np.concatenate(crops), crop=spec.crop, color=spec.color, value_range=tuple(spec.value_range),
        provenance={"source": str(cache_dir), "split": split, "seed": seed, "num_videos": len(sources),
                    "videos": sources, "cache": cache.meta},
    )


def build(source: str | Path, spec: ModelSpec, n: int = DEFAULT_SIZE, seed: int = 0, split: str | None = None,
          cache_dir: str | Path | None = None, frames: int = 8, detector: str = "auto", workers: int = 1) -> CalibrationSet:
    """A calibration set from an ``aunet-prep`` cache, or from any image/video file or folder: those are first
    preprocessed (same detector, crop and size as training, via aunet.prep) into ``cache_dir`` (a temporary
    folder when None), ``frames`` per video, the largest face of each."""
    source = Path(source)
    if is_face_cache(source):
        return from_cache(source, spec, n, seed, split)
    if not source.exists():
        raise CalibrationError(f"calibration source not found: {source}")
    import tempfile

    from aunet.prep import PrepError, PrepSettings, discover, run_prep

    settings = PrepSettings(size=spec.input_size, crop=spec.crop, frames=frames, faces="largest", detector=detector)
    with tempfile.TemporaryDirectory(prefix="aunet-calib-") as tmp:
        cache = Path(cache_dir) if cache_dir is not None else Path(tmp)
        try:
            run_prep(discover(source), cache, settings, workers=workers)
        except PrepError as exc:
            raise CalibrationError(str(exc)) from None
        calib = from_cache(cache, spec, n, seed, split)
    calib.provenance["source"] = str(source)
    return calib
