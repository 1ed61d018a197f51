"""What an INPUT names: the jobs (one per video or image) with their labels, splits and forgery methods.

A file, a folder of videos and/or images (labels and splits from folder names: real/ fake/, train/ val/
test/), or a FaceForensics++ root (original_sequences/, manipulated_sequences/) with its split JSONs.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from rich.console import Console

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
REAL_DIRS = {"real", "reals", "original", "originals", "pristine", "genuine", "0_real"}
FAKE_DIRS = {"fake", "fakes", "manipulated", "forged", "deepfake", "1_fake"}
SPLIT_DIRS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
LABELS = ("auto", "real", "fake")  # "auto": from the folder names / the FF++ layout
FFPP_SPLITS = ("train", "val", "test")
FFPP_COMPRESSIONS = ("raw", "c23", "c40")


class PrepError(ValueError):
    """Bad input or usage (exit 2)."""


@dataclass(frozen=True)
class Job:
    """One input to preprocess."""

    video_id: str
    path: str
    kind: str  # "video" or "image"
    label: int = -1
    split: str = ""
    method: str = ""


def media_kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    return "video" if suffix in VIDEO_SUFFIXES else "image" if suffix in IMAGE_SUFFIXES else None


def is_ffpp_root(path: Path) -> bool:
    return path.is_dir() and ((path / "original_sequences").is_dir() or (path / "manipulated_sequences").is_dir())


def read_ffpp_pairs(path: Path) -> list[tuple[str, str]]:
    """One of FF++'s split files: a JSON list of [target, source] id pairs."""
    try:
        return [(str(a), str(b)) for a, b in json.loads(path.read_text())]
    except (ValueError, TypeError) as exc:
        raise PrepError(f"split file {path} is not a list of id pairs ({exc})") from None


def load_ffpp_splits(split_dir: Path) -> dict[str, set[tuple[str, str]]]:
    """FF++'s official split files: {split: {(target, source) pairs}}, both orders."""
    splits = {}
    for name in FFPP_SPLITS:
        path = split_dir / f"{name}.json"
        if not path.is_file():
            raise PrepError(f"split file missing: {path} (FF++ ships train.json, val.json and test.json)")
        pairs = read_ffpp_pairs(path)
        splits[name] = set(pairs) | {(b, a) for a, b in pairs}
    return splits


def ffpp_split(stem: str, label: int, splits: dict[str, set[tuple[str, str]]]) -> str:
    """FF++ names: real "953", fake "953_974" (target_source); a video belongs to its pair's split."""
    for name, pairs in splits.items():
        if label == 0 and any(stem == a for a, _ in pairs):
            return name
        if label == 1 and tuple(stem.split("_", 1)) in pairs:
            return name
    return ""


def ffpp_jobs(root: Path, split_dir: Path | None, compression: str, console: Console) -> list[Job]:
    default_dirs = [root / "splits", root]
    if split_dir is not None:
        splits = load_ffpp_splits(split_dir)
    else:
        found = next((d for d in default_dirs if (d / "train.json").is_file()), None)
        splits = load_ffpp_splits(found) if found is not None else {}
        if not splits:
            console.print("[yellow]FF++ layout without split files (--split-dir): videos get no split[/yellow]")
    jobs = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        parts = rel.parts
        if media_kind(path) != "video" or "masks" in parts or parts[0] not in ("original_sequences", "manipulated_sequences"):
            continue
        if compression != "all" and compression not in parts:
            continue
        label = 0 if parts[0] == "original_sequences" else 1
        method = parts[1] if label == 1 and len(parts) > 2 else ""
        jobs.append(Job(rel.as_posix(), str(path), "video", label, ffpp_split(path.stem, label, splits), method))
    return jobs


def folder_labels(parts: Sequence[str]) -> tuple[int, str]:
    """Label and split from folder names (real/ fake/, train/ val/ test/), -1 and "" when none says."""
    lowered = [p.lower() for p in parts]
    label = -1
    for p in lowered:
        if p in REAL_DIRS:
            label = 0
        elif p in FAKE_DIRS:
            label = 1
    split = next((SPLIT_DIRS[p] for p in lowered if p in SPLIT_DIRS), "")
    return label, split


def discover(input_path: str | os.PathLike, split_dir: str | os.PathLike | None = None, label: str = "auto",
             compression: str = "all", console: Console | None = None) -> list[Job]:
    """The jobs an INPUT names (see the module doc); raises PrepError for bad input."""
    console = console or Console(stderr=True)
    root = Path(input_path)
    forced = {"auto": None, "real": 0, "fake": 1}
    if label not in forced:
        raise PrepError(f"--label must be one of {', '.join(LABELS)}, got {label!r}")
    if not root.exists():
        raise PrepError(f"{root} does not exist")
    if split_dir is not None and not Path(split_dir).is_dir():
        raise PrepError(f"--split-dir {split_dir} is not a folder")
    if root.is_file():
        kind = media_kind(root)
        if kind is None:
            raise PrepError(f"{root} is not a video or an image (known suffixes: {', '.join(sorted(VIDEO_SUFFIXES | IMAGE_SUFFIXES))})")
        lab, split = folder_labels(root.resolve().parent.parts[-2:])
        jobs = [Job(root.name, str(root), kind, lab, split)]
    elif is_ffpp_root(root):
        jobs = ffpp_jobs(root, Path(split_dir) if split_dir is not None else None, compression, console)
    else:
        jobs = []
        for path in sorted(root.rglob("*")):
            kind = media_kind(path) if path.is_file() else None
            if kind is not None and not any(p.startswith(".") for p in path.relative_to(root).parts):
                rel = path.relative_to(root)
                lab, split = folder_labels(rel.parts[:-1])
                jobs.append(Job(rel.as_posix(), str(path), kind, lab, split))
    if not jobs:
        raise PrepError(f"no videos or images under {root}")
    if forced[label] is not None:
        jobs = [Job(j.video_id, j.path, j.kind, forced[label], j.split, j.method) for j in jobs]
    return jobs
