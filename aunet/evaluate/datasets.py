"""Labeled sets: which files a --data path names and their labels (CSV list, Celeb-DF v2, FF++ test split,
DFDC-Preview), and the face cache that holds them (the path itself, or built once with aunet-prep's pipeline)."""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

from rich.console import Console

from aunet.cli import EXIT_BAD_INPUT, EXIT_MISSING
from aunet.faces import DependencyError
from aunet.faces.cache import CacheError, FaceCache, is_face_cache
from aunet.prep import FFPP_METHODS, PrepError, prepare_labeled, read_ffpp_pairs



class EvalError(Exception):
    """Bad evaluation input (``code`` is the CLI's exit code)."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class LabeledFile:
    """A raw video or image of a labeled set (label 1 = fake); method names the forgery (FF++), "" for reals."""

    path: Path
    label: int
    method: str = ""


Labeled = Union[FaceCache, list[LabeledFile]]  # a cache that is the set, or the raw files still to prepare


def read_csv_list(path: Path) -> list[LabeledFile]:
    """``path,label[,method]`` rows; a header row is optional; relative paths are relative to the CSV."""
    try:
        rows = [r for r in csv.reader(io.StringIO(path.read_text())) if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalError(f"cannot read {path}: {exc}") from None
    if not rows:
        raise EvalError(f"{path} lists no files")
    cols = {"path": 0, "label": 1, "method": 2}
    header = [c.strip().lower() for c in rows[0]]
    if "label" in header:
        name_col = next((header.index(n) for n in ("path", "filename", "file", "video") if n in header), None)
        if name_col is None:
            raise EvalError(f"{path}: the header needs a path (or filename/file/video) column")
        cols = {"path": name_col, "label": header.index("label"), "method": header.index("method") if "method" in header else -1}
        rows = rows[1:]
    items = []
    for line, row in enumerate(rows, start=2 if "label" in header else 1):
        try:
            raw = row[cols["label"]].strip().lower()
            label = {"fake": 1, "real": 0}.get(raw, None)
            label = int(raw) if label is None else label
            if label not in (0, 1):
                raise ValueError
            file = Path(row[cols["path"]].strip())
        except (IndexError, ValueError):
            raise EvalError(f"{path} line {line}: expected path,label with label 0 (real) or 1 (fake)") from None
        method = row[cols["method"]].strip() if 0 <= cols["method"] < len(row) else ""
        items.append(LabeledFile(file if file.is_absolute() else path.parent / file, label, method))
    return items


def read_celebdf(root: Path) -> list[LabeledFile]:
    """Celeb-DF v2's List_of_testing_videos.txt: ``<1 real | 0 fake> <relative path>``."""
    listing = root / "List_of_testing_videos.txt" if root.is_dir() else root
    if not listing.is_file():
        raise EvalError(f"missing split file {listing}")
    items = []
    for n, line in enumerate(listing.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] not in ("0", "1"):
            raise EvalError(f"{listing} line {n}: expected '<1|0> <path>'")
        rel = Path(parts[1])
        items.append(LabeledFile(listing.parent / rel, 1 - int(parts[0]), rel.parts[0] if parts[0] == "0" else ""))
    return items


def read_ffpp(root: Path, compression: str = "c23", methods: Sequence[str] = FFPP_METHODS) -> list[LabeledFile]:
    """FF++'s official test split (splits/test.json: pairs of target/source ids): the 140 real videos and,
    per method, the 2 x 70 fakes made from each pair."""
    split = next((p for p in (root / "splits" / "test.json", root / "test.json") if p.is_file()), None)
    if split is None:
        raise EvalError(f"missing split file {root / 'splits' / 'test.json'} (FaceForensics' dataset/splits/test.json)")
    try:
        ids = read_ffpp_pairs(split)
    except PrepError as exc:
        raise EvalError(str(exc)) from None
    real_dir = root / "original_sequences" / "youtube" / compression / "videos"
    items = [LabeledFile(real_dir / f"{v}.mp4", 0) for pair in ids for v in pair]
    for method in methods:
        fake_dir = root / "manipulated_sequences" / method / compression / "videos"
        items += [LabeledFile(fake_dir / f"{x}_{y}.mp4", 1, method) for a, b in ids for x, y in ((a, b), (b, a))]
    return items


def read_dfdcp(root: Path) -> list[LabeledFile]:
    """DFDC-Preview's dataset.json: {relative path: {"label": "real"|"fake", "set": "train"|"test"}}."""
    try:
        meta = json.loads((root / "dataset.json").read_text())
        return [
            LabeledFile(root / rel, 1 if v["label"] == "fake" else 0)
            for rel, v in sorted(meta.items())
            if v.get("set") == "test"
        ]
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        raise EvalError(f"{root / 'dataset.json'} is not DFDC-Preview's metadata: {exc}") from None


def labeled_files(source: Path, compression: str = "c23") -> list[LabeledFile]:
    """The files and labels a labeled-set path names (see aunet.evaluate.cli's doc)."""
    if source.is_file():
        return read_celebdf(source) if source.name == "List_of_testing_videos.txt" else read_csv_list(source)
    if not source.is_dir():
        raise EvalError(f"--data {source} does not exist")
    if (source / "List_of_testing_videos.txt").is_file():
        return read_celebdf(source)
    if (source / "original_sequences").is_dir():
        return read_ffpp(source, compression)
    if (source / "dataset.json").is_file():
        return read_dfdcp(source)
    raise EvalError(
        f"--data {source}: not a face cache, a CSV, a Celeb-DF/FF++/DFDC-Preview folder; "
        "list other sets (DFD, DFDC, FFIW) in a path,label CSV"
    )


def find_labeled(source: str | os.PathLike, compression: str = "c23") -> Labeled:
    """What --data names, checked without loading a model: the face cache it is, or its raw files (at least
    one of which exists)."""
    source = Path(source)
    if is_face_cache(source):
        try:
            return FaceCache(source)
        except CacheError as exc:
            raise EvalError(str(exc)) from None
    files = labeled_files(source, compression)
    if not any(f.path.exists() for f in files):
        raise EvalError(f"--data {source}: none of its {len(files)} listed files exists (first: {files[0].path})")
    return files


def labeled_cache(labeled: Labeled, cache_dir: Path, size: int, frames: int = 32, console: Console | None = None,
                  crop=None) -> FaceCache:
    """The FaceCache of a labeled set: raw files are prepared (once, resumable) in cache_dir with aunet-prep's
    pipeline at the model's crop size, every face of ``frames`` frames a video."""
    if isinstance(labeled, FaceCache):
        return labeled
    try:
        return prepare_labeled(labeled, cache_dir, console=console, size=size, frames=frames, crop=crop)
    except (CacheError, PrepError) as exc:
        raise EvalError(str(exc)) from None
    except DependencyError as exc:
        raise EvalError(str(exc), EXIT_MISSING) from None


def open_labeled(source: str | os.PathLike, cache_dir: Path, size: int, frames: int = 32, compression: str = "c23",
                 console: Console | None = None, crop=None) -> FaceCache:
    """find_labeled + labeled_cache: a FaceCache holding the labeled set."""
    return labeled_cache(find_labeled(source, compression), Path(cache_dir), size, frames, console, crop)
