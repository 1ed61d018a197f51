"""`aunet-prep`: videos and images -> a face cache (aunet.cache) for training and evaluation (torch-free unless
RetinaFace is used).

    aunet-prep INPUT --out DIR [--frames 32] [--size 224] [--detector auto|retinaface|dlib] [--workers N]
               [--split-dir DIR] [--faces largest|all] [--label auto|real|fake]
    aunet-prep preview DIR --out grid.png

INPUT: a video, an image, a folder of videos and/or images, or a FaceForensics++ root (original_sequences/,
manipulated_sequences/) with its split JSONs (train.json, val.json, test.json). Per frame: faces detected,
68 landmarks (dlib), the crop cut as aunet.crop / the CropSpec defines it, landmarks mapped into the crop.
A video that cannot be read, has no frames or shows no face is recorded (records/<id>.json) and skipped; the
run goes on. Rerunning skips the finished videos. Exit codes (docs/preprocessing.md): 0 done (failures are
recorded), 1 no input gave a face, 2 bad input or usage, 3 a missing dependency or model file, 4 writing the
cache failed (e.g. disk full; finished videos are kept), 130 interrupted (rerun to resume).
"""
from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import cv2
import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .cache import STATUS_OK, CacheError, CacheWriter, FaceCache, VideoFaces, VideoRecord
from .crop import crop_face, to_crop_coords
from .faces import DETECTORS, DependencyError, LandmarkPredictor, make_detector
from .io import atomic_write_bytes
from .spec import CropSpec

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
REAL_DIRS = {"real", "reals", "original", "originals", "pristine", "genuine", "0_real"}
FAKE_DIRS = {"fake", "fakes", "manipulated", "forged", "deepfake", "1_fake"}
SPLIT_DIRS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
FFPP_SPLITS = ("train", "val", "test")
EXIT_OK, EXIT_NO_FACE, EXIT_BAD_INPUT, EXIT_DEPENDENCY, EXIT_WRITE, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130


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


@dataclass(frozen=True)
class PrepSettings:
    size: int = 224
    crop: CropSpec = field(default_factory=CropSpec)
    frames: int = 32  # sampled evenly per video
    faces: str = "largest"  # "largest" (training) or "all" (evaluation)
    detector: str = "auto"
    retinaface_weights: Optional[str] = None
    min_score: Optional[float] = None  # detector's score threshold (None: the detector's default)
    landmarks: Optional[str] = None  # dlib 68-point model (None: face-recognition-models' file)

    def meta(self, detector_name: str) -> dict:
        return {"frames_per_video": self.frames, "faces": self.faces, "detector": detector_name}


# ----------------------------------------------------------------------------------------------------------
# inputs


def media_kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    return "video" if suffix in VIDEO_SUFFIXES else "image" if suffix in IMAGE_SUFFIXES else None


def is_ffpp_root(path: Path) -> bool:
    return path.is_dir() and ((path / "original_sequences").is_dir() or (path / "manipulated_sequences").is_dir())


def load_ffpp_splits(split_dir: Path) -> dict[str, set[tuple[str, str]]]:
    """FF++'s official split files: {split: {(target, source) pairs}}, both orders."""
    splits = {}
    for name in FFPP_SPLITS:
        path = split_dir / f"{name}.json"
        if not path.is_file():
            raise PrepError(f"split file missing: {path} (FF++ ships train.json, val.json and test.json)")
        try:
            pairs = json.loads(path.read_text())
            splits[name] = {(str(a), str(b)) for a, b in pairs} | {(str(b), str(a)) for a, b in pairs}
        except (ValueError, TypeError) as exc:
            raise PrepError(f"split file {path} is not a list of id pairs ({exc})") from None
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
        raise PrepError(f"--label must be auto, real or fake, got {label!r}")
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


# ----------------------------------------------------------------------------------------------------------
# one video


class _Skip(Exception):
    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


def sample_indices(total: int, num: int) -> np.ndarray:
    """``num`` frame indices spread evenly over [0, total) (all of them for shorter videos)."""
    if total <= 0 or num <= 0:
        return np.zeros(0, np.int64)
    return np.unique(np.linspace(0, total - 1, num).round().astype(np.int64))


def iter_frames(job: Job, num: int) -> Iterator[tuple[int, np.ndarray]]:
    """(frame index, RGB uint8) of an image (index 0) or of ``num`` evenly sampled video frames, one at a time
    (a worker never holds a whole video). Raises _Skip for an unreadable file or a video without frames."""
    if job.kind == "image":
        bgr = cv2.imread(job.path, cv2.IMREAD_COLOR)
        if bgr is None:
            raise _Skip("unreadable", "not a readable image")
        yield 0, np.ascontiguousarray(bgr[..., ::-1])
        return
    cap = cv2.VideoCapture(job.path)
    try:
        if not cap.isOpened():
            raise _Skip("unreadable", "OpenCV cannot open this video")
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if total <= 0:  # no count in the container: count by decoding, then reopen
            while cap.grab():
                total += 1
            cap.release()
            cap = cv2.VideoCapture(job.path)
        wanted = set(sample_indices(total, num).tolist())
        decoded = 0
        for i in range(max(wanted) + 1 if wanted else 0):
            if not cap.grab():
                break  # the container claimed more frames than it holds
            if i in wanted:
                ok, bgr = cap.retrieve()
                if ok and bgr is not None:
                    decoded += 1
                    yield i, np.ascontiguousarray(bgr[..., ::-1])
        if decoded == 0:
            raise _Skip("no_frames", f"no decodable frame (the container reports {total})")
    finally:
        cap.release()


class FacePipeline:
    """Detector + landmarks + crop, built once per worker process."""

    def __init__(self, settings: PrepSettings):
        self.settings = settings
        kwargs = {} if settings.min_score is None else {"min_score": settings.min_score}
        self.detector = make_detector(settings.detector, settings.retinaface_weights, **kwargs)
        self.landmarks = LandmarkPredictor(settings.landmarks)

    def faces(self, job: Job) -> tuple[VideoRecord, VideoFaces | None]:
        s = self.settings
        base = dict(video_id=job.video_id, source=job.path, label=job.label, split=job.split, method=job.method)
        rows: dict[str, list] = {k: [] for k in VideoFaces.FIELDS}
        num_frames = without = 0
        try:
            for index, rgb in iter_frames(job, s.frames):
                num_frames += 1
                found = self.detector.detect(rgb)
                if not found:
                    without += 1
                for rank, face in enumerate(found[:1] if s.faces == "largest" else found):
                    lm = self.landmarks.predict(rgb, face.box)
                    crop, affine = crop_face(rgb, face.box, s.size, s.crop)
                    rows["crops"].append(crop)
                    rows["landmarks"].append(to_crop_coords(lm, affine).astype(np.float32))
                    rows["frame_indices"].append(index)
                    rows["boxes"].append(np.asarray(face.box, np.float32))
                    rows["face_index"].append(rank)
                    rows["scores"].append(face.score)
        except _Skip as skip:
            return VideoRecord(**base, num_faces=0, status=skip.status, error=str(skip)), None
        n = len(rows["crops"])
        counts = dict(num_frames=num_frames, frames_without_face=without)
        if n == 0:
            return VideoRecord(**base, num_faces=0, status="no_face", error="no face detected", **counts), None
        faces = VideoFaces(
            crops=np.stack(rows["crops"]),
            landmarks=np.stack(rows["landmarks"]),
            frame_indices=np.asarray(rows["frame_indices"], np.int64),
            boxes=np.stack(rows["boxes"]),
            face_index=np.asarray(rows["face_index"], np.int64),
            scores=np.asarray(rows["scores"], np.float32),
        )
        return VideoRecord(**base, num_faces=n, status=STATUS_OK, **counts), faces

    def process(self, job: Job, writer: CacheWriter) -> VideoRecord:
        """Preprocess one job and store it. Decoding / detection errors become a recorded "error"; errors
        writing the cache (disk full) propagate: they are not the video's fault."""
        try:
            record, faces = self.faces(job)
        except Exception as exc:  # a failure of this input must never stop the run
            message = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            record, faces = VideoRecord(job.video_id, job.path, job.label, job.split, job.method, 0, "error", error=message), None
        writer.write(record, faces)
        return record


_WORKER: dict = {}


def _init_worker(settings: PrepSettings, out: str) -> None:
    cv2.setNumThreads(1)  # parallelism comes from the processes
    _WORKER["pipeline"] = FacePipeline(settings)
    _WORKER["writer"] = CacheWriter(out, settings.size, settings.crop)


def _work(job: Job) -> VideoRecord:
    return _WORKER["pipeline"].process(job, _WORKER["writer"])


# ----------------------------------------------------------------------------------------------------------
# a run


@dataclass
class PrepResult:
    records: list[VideoRecord]
    skipped: int  # already in the cache (resume)

    @property
    def status_counts(self) -> Counter:
        return Counter(r.status for r in self.records)


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
    )


def run_prep(jobs: Sequence[Job], out: str | os.PathLike, settings: PrepSettings, workers: int = 1,
             console: Console | None = None, show_progress: bool = True) -> PrepResult:
    """Preprocess the jobs into the cache at ``out`` (resuming it). Raises CacheError (another crop),
    DependencyError (detector / landmark model) and OSError (writing)."""
    console = console or Console(stderr=True)
    pipeline = FacePipeline(settings)  # fails early on a missing dependency, before any worker starts
    writer = CacheWriter(out, settings.size, settings.crop, **settings.meta(pipeline.detector.name))
    todo = [j for j in jobs if not writer.is_done(j.video_id)]
    result = PrepResult(records=[], skipped=len(jobs) - len(todo))
    if result.skipped:
        console.print(f"resuming: {result.skipped} of {len(jobs)} inputs are already in {out}")
    with _progress(console) as progress:
        task = progress.add_task("faces", total=len(todo), stats="", visible=show_progress)

        def done(record: VideoRecord) -> None:
            result.records.append(record)
            c = result.status_counts
            progress.update(task, advance=1, stats=f"ok {c[STATUS_OK]}  skipped {len(result.records) - c[STATUS_OK]}")

        if workers <= 1 or len(todo) <= 1:
            for job in todo:
                done(pipeline.process(job, writer))
        else:
            _run_pool(todo, out, settings, workers, done)
    return result


def _run_pool(todo: Sequence[Job], out, settings: PrepSettings, workers: int, done) -> None:
    """Jobs over worker processes, a bounded number in flight. A worker that dies (a decoder segfault) breaks
    the pool: the jobs that were in flight are rerun one at a time, so that a second crash names its input,
    which is recorded as an "error"; the others go on."""
    pending = list(reversed(todo))
    suspects: list[Job] = []
    ctx = multiprocessing.get_context("spawn")  # no fork of the progress thread; workers build their own dlib

    def new_pool(n: int) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(n, mp_context=ctx, initializer=_init_worker, initargs=(settings, str(out)))

    while pending or suspects:
        if suspects:
            job = suspects.pop()
            with new_pool(1) as pool:
                try:
                    done(pool.submit(_work, job).result())
                except cf.process.BrokenProcessPool:
                    record = VideoRecord(job.video_id, job.path, job.label, job.split, job.method, 0, "error",
                                         error="the worker process crashed on this input")
                    CacheWriter(out, settings.size, settings.crop).write(record)
                    done(record)
            continue
        with new_pool(workers) as pool:
            in_flight: dict[cf.Future, Job] = {}
            while (pending or in_flight) and not suspects:
                while pending and len(in_flight) < 2 * workers:
                    job = pending.pop()
                    in_flight[pool.submit(_work, job)] = job
                finished, _ = cf.wait(in_flight, return_when=cf.FIRST_COMPLETED)
                for fut in finished:
                    job = in_flight.pop(fut)
                    try:
                        done(fut.result())
                    except cf.process.BrokenProcessPool:
                        suspects.append(job)
            if suspects:  # the pool broke: everything still in flight is suspect too
                suspects.extend(in_flight.values())
                pool.shutdown(wait=False, cancel_futures=True)


def prepare_labeled(files: Iterable, cache_dir: str | os.PathLike, console: Console | None = None,
                    size: int = 224, crop: CropSpec | None = None, frames: int = 32, detector: str = "auto",
                    workers: int = 1, **settings) -> FaceCache:
    """A labeled set (objects with .path, .label, .method, e.g. aunet.evaluate.LabeledFile) -> a face cache
    with every face of every frame (evaluation keeps all faces), split "test". Resumes like aunet-prep."""
    files = list(files)
    if not files:
        raise PrepError("no labeled files to preprocess")
    paths = [Path(f.path) for f in files]
    common = Path(os.path.commonpath([p.resolve().parent for p in paths]))
    jobs = []
    for f, p in zip(files, paths):
        kind = media_kind(p) or "video"
        jobs.append(Job(p.resolve().relative_to(common).as_posix(), str(p), kind, int(f.label), "test", str(getattr(f, "method", ""))))
    prep = PrepSettings(size=size, crop=crop or CropSpec(), frames=frames, faces="all", detector=detector, **settings)
    run_prep(jobs, cache_dir, prep, workers=workers, console=console)
    return FaceCache(cache_dir, size=size, crop=prep.crop)


def summary_table(result: PrepResult) -> Table:
    table = Table(title="aunet-prep", show_edge=False)
    for col in ("status", "inputs", "real", "fake", "unknown", "faces"):
        table.add_column(col, justify="right" if col != "status" else "left")
    by_status: dict[str, list[VideoRecord]] = {}
    for r in result.records:
        by_status.setdefault(r.status, []).append(r)
    for status, recs in sorted(by_status.items(), key=lambda kv: (kv[0] != STATUS_OK, kv[0])):
        labels = Counter(r.label for r in recs)
        table.add_row(status, str(len(recs)), str(labels[0]), str(labels[1]), str(labels[-1]), str(sum(r.num_faces for r in recs)))
    return table


# ----------------------------------------------------------------------------------------------------------
# preview


def preview_grid(cache: FaceCache, rows: int = 6, seed: int = 0) -> np.ndarray:
    """An RGB picture: per row a real crop, its TAP fake, M_p, the 15 AU maps over the crop, |fake - real|."""
    from .au_masks import au_masks
    from .sbi import make_tap_pair

    videos = cache.videos()
    if not videos:
        raise PrepError(f"{cache.root} holds no faces to preview")
    rng = np.random.default_rng(seed)
    picks = [videos[i % len(videos)] for i in range(rows)]
    size = cache.size
    palette = (np.array([[int(c) for c in cv2.applyColorMap(np.uint8([[i * 255 // 14]]), cv2.COLORMAP_HSV)[0, 0][::-1]]
                         for i in range(15)], np.float32))
    lines = []
    for rec in picks:
        faces = cache.load(rec.video_id)
        row = int(rng.integers(len(faces)))
        crop, lm = faces.crops[row], faces.landmarks[row]
        real, fake, m_p = make_tap_pair(crop, lm, rng)
        masks = au_masks(lm, size)
        colour = (masks[..., None] * palette[:, None, None, :]).max(0)
        au_view = np.clip(0.45 * crop + 0.8 * colour, 0, 255).astype(np.uint8)
        mp_view = np.repeat((m_p * 255).astype(np.uint8)[..., None], 3, axis=2)
        diff = np.clip(np.abs(fake.astype(np.int16) - real.astype(np.int16)).max(-1) * 4, 0, 255).astype(np.uint8)
        lines.append(np.hstack([real, fake, mp_view, au_view, np.repeat(diff[..., None], 3, axis=2)]))
    grid = np.vstack(lines)
    header = np.full((28, grid.shape[1], 3), 255, np.uint8)
    for i, title in enumerate(("real", "TAP fake", "M_p", "AU maps", "|fake-real| x4")):
        cv2.putText(header, title, (i * size + 6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([header, grid])


# ----------------------------------------------------------------------------------------------------------
# CLI

prep_app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, rich_markup_mode=None)
preview_app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None)
err = Console(stderr=True)


def _fail(code: int, message: str) -> typer.Exit:
    err.print(f"aunet-prep: {message}", style="red", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(code)


@prep_app.command()
def prep(
    input_path: Path = typer.Argument(..., metavar="INPUT", help="a video, an image, a folder of them, or an FF++ root"),
    out: Path = typer.Option(..., "--out", help="the face cache folder (created, or resumed)"),
    frames: int = typer.Option(32, min=1, help="frames sampled evenly per video"),
    size: int = typer.Option(224, min=16, help="crop side in pixels (the model's input size)"),
    margin: float = typer.Option(CropSpec().margin, min=0.0, help="crop margin, fraction of the face box side, each side"),
    detector: str = typer.Option("auto", help="auto | retinaface | dlib"),
    retinaface_weights: Optional[Path] = typer.Option(None, help="RetinaFace weights (Pytorch_Retinaface .pth)"),
    min_score: Optional[float] = typer.Option(None, help="detector score threshold (default: the detector's)"),
    faces: str = typer.Option("largest", help="largest (one face per frame, training) | all (evaluation)"),
    label: str = typer.Option("auto", help="auto (from FF++ / real|fake folder names) | real | fake"),
    split_dir: Optional[Path] = typer.Option(None, help="folder with FF++'s train.json, val.json, test.json"),
    compression: str = typer.Option("all", help="FF++ only: keep one compression (raw, c23, c40) or all"),
    workers: int = typer.Option(1, min=0, help="worker processes (0 or 1: in this process)"),
) -> None:
    """Detect, align and crop faces into a resumable cache. Look at it with: aunet-prep preview DIR --out grid.png

    Exit codes: 0 done (failures recorded in DIR/records), 1 no input gave a face, 2 bad input or usage,
    3 missing dependency or model file, 4 cannot write the cache (disk full), 130 interrupted (rerun resumes).
    """
    if detector not in DETECTORS:
        raise _fail(EXIT_BAD_INPUT, f"--detector must be one of {', '.join(DETECTORS)}, got {detector!r}")
    if faces not in ("largest", "all"):
        raise _fail(EXIT_BAD_INPUT, f"--faces must be largest or all, got {faces!r}")
    console = Console(stderr=True)
    try:
        jobs = discover(input_path, split_dir, label, compression, console)
        settings = PrepSettings(size=size, crop=CropSpec(margin=margin), frames=frames, faces=faces, detector=detector,
                                retinaface_weights=str(retinaface_weights) if retinaface_weights else None,
                                min_score=min_score)
        result = run_prep(jobs, out, settings, workers=workers, console=console)
    except (PrepError, CacheError) as exc:
        raise _fail(EXIT_BAD_INPUT, str(exc)) from None
    except DependencyError as exc:
        raise _fail(EXIT_DEPENDENCY, str(exc)) from None
    except KeyboardInterrupt:
        raise _fail(EXIT_INTERRUPTED, f"interrupted; the finished videos are in {out}, rerun to resume") from None
    except OSError as exc:
        raise _fail(EXIT_WRITE, f"cannot write the cache {out}: {exc.strerror or exc}; rerun to resume") from None
    console.print(summary_table(result))
    failures = [r for r in result.records if r.status != STATUS_OK]
    for r in failures[:10]:
        console.print(f"  skipped {r.video_id}: {r.status} ({r.error})", markup=False, highlight=False)
    if len(failures) > 10:
        console.print(f"  ... {len(failures) - 10} more in {out}/records")
    cache = FaceCache(out)
    total_ok = len(cache.videos())
    console.print(f"{out}: {total_ok} inputs with faces, {len(cache.failures())} recorded failures")
    if total_ok == 0:
        raise _fail(EXIT_NO_FACE, "no input gave a face")


@preview_app.command()
def preview(
    cache_dir: Path = typer.Argument(..., metavar="DIR", help="a face cache made by aunet-prep"),
    out: Path = typer.Option(..., "--out", help="the PNG to write"),
    rows: int = typer.Option(6, min=1, max=64, help="faces shown, one per row"),
    seed: int = typer.Option(0, help="seed of the TAP fakes"),
) -> None:
    """A picture of real crops, their TAP fakes, M_p and the AU maps."""
    try:
        grid = preview_grid(FaceCache(cache_dir), rows, seed)
    except (PrepError, CacheError) as exc:
        raise _fail(EXIT_BAD_INPUT, str(exc)) from None
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(grid[..., ::-1]))
    if not ok:
        raise _fail(EXIT_WRITE, "OpenCV could not encode the preview as PNG")
    try:
        atomic_write_bytes(out, buf.tobytes())
    except OSError as exc:
        raise _fail(EXIT_WRITE, f"cannot write {out}: {exc.strerror or exc}") from None
    Console(stderr=True).print(f"wrote {out} ({grid.shape[1]}x{grid.shape[0]})")


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: `aunet-prep INPUT ...` or `aunet-prep preview DIR ...` (exits with the code)."""
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # our one line per failure, not OpenCV's
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["preview"]:
        preview_app(args=args[1:], prog_name="aunet-prep preview")
    else:
        prep_app(args=args, prog_name="aunet-prep")


if __name__ == "__main__":
    main()
