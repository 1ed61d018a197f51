"""What an INPUT names: the jobs (one per video or image) with their labels, splits and forgery methods.

A file, a folder of videos and/or images (labels and splits from folder names: real/ fake/, train/ val/
test/), or a FaceForensics++ root (original_sequences/, manipulated_sequences/) with its split JSONs, read as
the paper uses it (section 4.1): the YouTube reals and the four methods, each video in its official split.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
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
FFPP_DEFAULT_COMPRESSION = "c23"  # the paper trains on HQ (section 4.1)
FFPP_TOP_DIRS = ("original_sequences", "manipulated_sequences")
FFPP_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")
# The paper's FF++ (section 4.1): the YouTube reals and the four methods. original_sequences/actors and
# manipulated_sequences/DeepFakeDetection are DFD, one of its test sets; FaceShifter came later.
FFPP_PROTOCOL_DIRS = ("original_sequences/youtube", *(f"manipulated_sequences/{m}" for m in FFPP_METHODS))


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
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise PrepError(f"split file {path} is not JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, list) or not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in data):
        raise PrepError(f"split file {path} is not a list of [target, source] id pairs (FF++'s train/val/test.json)")
    return [(str(a), str(b)) for a, b in data]


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
    """FF++ names: real "953", fake "953_974" (target_source); a video belongs to its pair's split ("" for none)."""
    for name, pairs in splits.items():
        if label == 0 and any(stem == a for a, _ in pairs):
            return name
        if label == 1 and tuple(stem.split("_", 1)) in pairs:
            return name
    return ""


def ffpp_folder(video_id: str) -> str:
    """The folder of an FF++ video that decides whether the paper's protocol takes it:
    ``original_sequences/youtube``, ``manipulated_sequences/<method>``, or the top folder for anything else."""
    parts = PurePosixPath(video_id).parts
    if len(parts) > 2 and parts[0] in FFPP_TOP_DIRS:
        return "/".join(parts[:2])
    return parts[0] if len(parts) > 1 else "(top level)"


def is_ffpp_video(video_id: str) -> bool:
    """A video of an FF++ tree (its id starts with original_sequences/ or manipulated_sequences/)."""
    return PurePosixPath(video_id).parts[0] in FFPP_TOP_DIRS


def in_ffpp_protocol(video_id: str) -> bool:
    """Whether the paper's FF++ protocol (section 4.1) uses this video: the YouTube reals and the four methods."""
    return ffpp_folder(video_id) in FFPP_PROTOCOL_DIRS


def find_ffpp_splits(root: Path, split_dir: Path | None) -> tuple[Path, dict[str, set[tuple[str, str]]]]:
    """The split folder (``split_dir``, else ROOT/splits or ROOT) and its pairs; PrepError when there is none."""
    if split_dir is not None:
        return split_dir, load_ffpp_splits(split_dir)
    found = next((d for d in (root / "splits", root) if (d / "train.json").is_file()), None)
    if found is None:
        raise PrepError(f"{root} is a FaceForensics++ tree without its split files: pass --split-dir DIR holding "
                        f"FF++'s official train.json, val.json and test.json (looked in {root / 'splits'} and {root})")
    return found, load_ffpp_splits(found)


def _videos(n: int) -> str:
    return f"{n} video{'' if n == 1 else 's'}"


@dataclass
class FFPPScan:
    """What an FF++ tree holds for the paper's protocol: the jobs, and what was left out and why."""

    jobs: list[Job]
    excluded: Counter  # folder outside the protocol -> its videos
    unmatched: list[str]  # protocol videos that no split file lists (refused)
    compressions: Counter  # compression folder -> protocol videos found (all of them, before --compression)

    def report_lines(self) -> list[str]:
        lines = []
        if self.excluded:
            counts = ", ".join(f"{folder} {n}" for folder, n in sorted(self.excluded.items()))
            lines.append(f"FF++: excluded {_videos(sum(self.excluded.values()))} outside the paper's training data "
                         f"(original_sequences/youtube and {', '.join(FFPP_METHODS)}): {counts}")
        if self.unmatched:
            shown = ", ".join(self.unmatched[:3]) + (f" and {len(self.unmatched) - 3} more" if len(self.unmatched) > 3 else "")
            lines.append(f"FF++: refused {_videos(len(self.unmatched))} that no split file lists: {shown}")
        return lines


def scan_ffpp(root: Path, split_dir: Path | None, compression: str) -> FFPPScan:
    """The paper's FF++ protocol over a tree: ``original_sequences/youtube`` (real) and the four methods under
    ``manipulated_sequences`` (fake), ``*/videos/*.mp4`` of one compression (or all), never the ``masks`` videos,
    each with the split its id pair has in the official split files. Everything else (DeepFakeDetection's actors
    and fakes, FaceShifter, unknown folders) is counted as excluded; videos that no split lists are refused.
    PrepError when the split files are missing or name none of the videos."""
    split_path, splits = find_ffpp_splits(root, split_dir)
    scan = FFPPScan([], Counter(), [], Counter())
    candidates = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if media_kind(path) != "video" or not path.is_file() or any(p.startswith(".") for p in rel.parts):
            continue
        video_id = rel.as_posix()
        if not in_ffpp_protocol(video_id):
            scan.excluded[ffpp_folder(video_id)] += 1
            continue
        if "masks" in rel.parts:  # the methods' tampering masks, not face videos
            continue
        level = next((p for p in rel.parts if p in FFPP_COMPRESSIONS), "")
        scan.compressions[level or "?"] += 1
        if compression == "all" or level == compression:
            candidates.append((rel, path))
    for rel, path in candidates:
        label = 0 if rel.parts[0] == "original_sequences" else 1
        method = rel.parts[1] if label == 1 else ""
        split = ffpp_split(path.stem, label, splits)
        if not split:
            scan.unmatched.append(rel.as_posix())
            continue
        scan.jobs.append(Job(rel.as_posix(), str(path), "video", label, split, method))
    if candidates and not scan.jobs:
        stems = sorted({p.stem for _, p in candidates})[:3]
        some_ids = sorted({a for pairs in splits.values() for a, _ in pairs})[:3]
        raise PrepError(f"the split files in {split_path} list none of the {len(candidates)} FF++ videos (videos "
                        f"{', '.join(stems)}; split ids {', '.join(some_ids) or 'none'}): give FF++'s own "
                        "train.json, val.json and test.json")
    if not candidates:
        found = ", ".join(f"{c} {n}" for c, n in sorted(scan.compressions.items())) or "none"
        raise PrepError(f"no {compression} videos of original_sequences/youtube or the four methods of "
                        f"manipulated_sequences under {root} (videos by compression: {found}; --compression)")
    return scan


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
             compression: str = FFPP_DEFAULT_COMPRESSION, console: Console | None = None) -> list[Job]:
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
        scan = scan_ffpp(root, Path(split_dir) if split_dir is not None else None, compression)
        for line in scan.report_lines():
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        jobs = scan.jobs
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
