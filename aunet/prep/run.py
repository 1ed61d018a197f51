"""Running prep: frames sampled from each input, faces detected, landmarks, crops, written to the face cache
(parallel workers, resumable, one failure record per input that gave no face)."""
from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import multiprocessing
import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import cv2
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from aunet.faces import FacePolicy, LandmarkPredictor, make_detector
from aunet.faces.cache import STATUS_OK, CacheWriter, FaceCache, VideoFaces, VideoRecord
from aunet.faces.crop import crop_face, to_crop_coords
from aunet.prep.inputs import Job, PrepError, media_kind
from aunet.spec import CropSpec

FACE_MODES = ("largest", "all")  # one face per frame (training) or every face (evaluation)


@dataclass(frozen=True)
class PrepSettings:
    """How faces are found and cut: the same settings give the same cache."""

    size: int = 224
    crop: CropSpec = field(default_factory=CropSpec)
    frames: int = 32  # sampled evenly per video
    faces: str = "largest"  # one of FACE_MODES
    detector: str = "auto"
    retinaface_weights: Optional[str] = None
    min_score: Optional[float] = None  # detector's score threshold (None: the detector's default)
    landmarks: Optional[str] = None  # dlib 68-point model (None: face-recognition-models' file)
    detector_model: Optional[str] = None  # the detector's model file (YuNet, a detector ONNX, a .tflite)
    policy: FacePolicy = field(default_factory=FacePolicy)  # which detected faces are kept (min_score joins it)

    @property
    def face_policy(self) -> FacePolicy:
        """The policy, with ``min_score`` as its score threshold when given."""
        return self.policy if self.min_score is None else dataclasses.replace(self.policy, min_score=self.min_score)

    def meta(self, detector_name: str, detector_spec: Optional[dict] = None) -> dict:
        extra = {} if detector_spec is None else {"detector_spec": detector_spec}
        return {"frames_per_video": self.frames, "faces": self.faces, "detector": detector_name,
                "face_policy": self.face_policy.to_dict(), **extra}


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
        weights = settings.detector_model or settings.retinaface_weights
        self.detector = make_detector(settings.detector, weights, **kwargs)
        self.policy = settings.face_policy
        self.landmarks = LandmarkPredictor(settings.landmarks)

    def faces(self, job: Job) -> tuple[VideoRecord, VideoFaces | None]:
        s = self.settings
        base = dict(video_id=job.video_id, source=job.path, label=job.label, split=job.split, method=job.method)
        rows: dict[str, list] = {k: [] for k in VideoFaces.FIELDS}
        num_frames = without = 0
        try:
            for index, rgb in iter_frames(job, s.frames):
                num_frames += 1
                found = self.policy.apply(self.detector.detect(rgb))
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
    from aunet.faces.yunet import UnknownYuNetWarning

    cv2.setNumThreads(1)  # parallelism comes from the processes
    warnings.simplefilter("ignore", UnknownYuNetWarning)  # the main process said it once, before the workers
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
    spec = getattr(pipeline.detector, "spec", None)  # the learned detectors' DetectorSpec
    writer = CacheWriter(out, settings.size, settings.crop, **settings.meta(
        pipeline.detector.name, dataclasses.asdict(spec) if dataclasses.is_dataclass(spec) else None))
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

