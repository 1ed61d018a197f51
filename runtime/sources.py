"""Inputs: video files, images, image sequences, folders, globs, RTSP/HTTP URLs and webcams, decoded with OpenCV.

``resolve_inputs`` turns command-line arguments into sources; ``VideoSource.frames`` yields the sampled frames
(RGB uint8) one at a time, so memory does not depend on the video's length. Only the sampled frames are
decoded where the file allows it: ``--frames N`` and ``--every K`` seek over long gaps (see ``Seeker``).
"""
from __future__ import annotations

import glob
import itertools
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Union

import cv2
import numpy as np

from .errors import InputError, SourceLost

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_SEQUENCE = re.compile(r"%0?\d*d")  # an image sequence, FFmpeg's way: frames/img_%05d.png
# A network stream that stalls must not hang the pipeline (FFmpeg backend, OpenCV >= 4.6).
STREAM_TIMEOUT_MS = 10_000

Target = Union[str, int]  # a path, pattern or URL, or a webcam index


@dataclass(frozen=True)
class Sampling:
    """Which frames to analyse: ``frames`` evenly spread over the video, every ``every``-th, or all."""

    frames: Optional[int] = None
    every: Optional[int] = None

    def __post_init__(self) -> None:
        if self.frames is not None and self.every is not None:
            raise ValueError("choose one of --frames and --every")
        if self.frames is not None and self.frames < 1:
            raise ValueError(f"--frames must be >= 1, got {self.frames}")
        if self.every is not None and self.every < 1:
            raise ValueError(f"--every must be >= 1, got {self.every}")

    def describe(self) -> str:
        if self.frames is not None:
            return f"{self.frames} frames, evenly spread"
        if self.every is not None:
            return f"every {self.every} frames"
        return "all frames"


def is_live(target: Target) -> bool:
    """Webcams and network URLs: sources without an end, read as they come (never seeked, never counted)."""
    return isinstance(target, int) or bool(_URL.match(str(target)))


def is_image(target: Target) -> bool:
    return not is_live(target) and Path(str(target)).suffix.lower() in IMAGE_SUFFIXES and not is_sequence(target)


def is_sequence(target: Target) -> bool:
    """An image-sequence pattern (``frames/%05d.png``) that is not itself a file: one input, frames in order."""
    text = str(target)
    return (not is_live(target) and Path(text).suffix.lower() in IMAGE_SUFFIXES and bool(_SEQUENCE.search(text))
            and not Path(text).exists())


def resolve_inputs(args: list[str]) -> list[Target]:
    """Expand arguments: a folder gives its videos and images (recursively, sorted; each image its own one-frame
    input), a glob its matches, digits a webcam, ``dir/%05d.png`` one image-sequence input.

    Paths are returned even when missing: the pipeline records them as per-input errors.
    """
    media = VIDEO_SUFFIXES + IMAGE_SUFFIXES
    out: list[Target] = []
    for arg in args:
        path = Path(arg)
        if arg.isdigit() and not path.exists():
            out.append(int(arg))
        elif _URL.match(arg) or path.is_file():
            out.append(arg)
        elif path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in media
                           and not p.name.startswith("."))
            if not found:
                raise InputError(f"no videos or images ({', '.join(media)}) under folder {arg}")
            out.extend(str(p) for p in found)
        elif is_sequence(arg):
            out.append(arg)
        elif glob.has_magic(arg):
            found = sorted(p for p in glob.glob(arg, recursive=True) if Path(p).is_file())
            if not found:
                raise InputError(f"no files match {arg}")
            out.extend(found)
        else:
            out.append(arg)  # missing: reported per input
    return out


def source_name(target: Target) -> str:
    return f"webcam:{target}" if isinstance(target, int) else str(target)


def even_indices(total: int, n: int) -> np.ndarray:
    """``n`` frame indices spread evenly over ``total`` frames, first and last included."""
    if total <= n:
        return np.arange(total)
    return np.unique(np.round(np.linspace(0, total - 1, n)).astype(np.int64))


class Seeker:
    """Decides, per gap between two wanted frames, whether to seek or to grab (decode and drop) the frames between.

    A seek (``CAP_PROP_POS_FRAMES``) lands exactly with OpenCV's FFmpeg backend (checked frame by frame on
    H.264 and MPEG-4 Part 2, docs/runtime.md) but decodes from the last key frame at least 16 frames before the
    target: on H.264 with a key frame every 10 s that averages ~150 grabs' worth of decoding, on MPEG-4 Part 2
    with a GOP of 12 ~30. The GOP is not known in advance, so both costs are measured as the file is read: the
    first long gap (>= ``probe_gap``) seeks, the next grabs, and from then on a gap seeks when grabbing through
    it would take longer than a seek has been taking. ``policy`` "never" or "always" fixes the choice (for
    benchmarks).
    """

    def __init__(self, policy: str = "auto", probe_gap: int = 32):
        if policy not in ("auto", "never", "always"):
            raise ValueError(f"seek policy must be auto, never or always, got {policy!r}")
        self.policy, self.probe_gap = policy, probe_gap
        self.grab_s: Optional[float] = None  # running mean seconds per grab
        self.seek_s: Optional[float] = None  # running mean seconds per seek (the seek and its decoding)
        self.seeks = self.grabs = 0

    def should_seek(self, gap: int) -> bool:
        """``gap``: frames to skip before the wanted one."""
        if gap <= 0 or self.policy == "never":
            return False
        if self.policy == "always":
            return True
        if self.seek_s is None:
            return gap >= self.probe_gap
        if self.grab_s is None:
            return False  # measure what grabbing costs once
        return gap * self.grab_s > self.seek_s

    def record_grabs(self, n: int, seconds: float) -> None:
        if n > 0:
            self.grabs += n
            self.grab_s = _mean(self.grab_s, seconds / n, n)

    def record_seek(self, seconds: float) -> None:
        self.seeks += 1
        self.seek_s = _mean(self.seek_s, seconds, 1)


def _mean(old: Optional[float], new: float, weight: int) -> float:
    """Exponential running mean that a run of ``weight`` samples moves further (the recent part of a file counts
    most: seek costs change with where in the GOP the targets fall)."""
    if old is None:
        return new
    a = min(0.5, 0.1 * weight)
    return (1 - a) * old + a * new


class VideoSource:
    """One input, opened with OpenCV. Iterate ``frames()`` once; ``close()`` (or ``with``) releases it.

    ``seek`` ("auto", "never", "always"): how a file skips frames it does not analyse (see ``Seeker``).
    """

    def __init__(self, target: Target, sampling: Sampling = Sampling(), seek: str = "auto"):
        self.target = target
        self.name = source_name(target)
        self.sampling = sampling
        self.live = is_live(target)
        self.seeker = Seeker(seek)
        self._image: Optional[np.ndarray] = None
        self._cap: Optional[cv2.VideoCapture] = None
        self._lock = threading.Lock()  # close() may come from another thread than the one reading
        self._closed = False
        self.sequence = is_sequence(target)
        if not self.live and not self.sequence:
            path = Path(str(target))
            if not path.exists():
                raise InputError(f"{self.name}: no such file")
            if not path.is_file():
                raise InputError(f"{self.name}: not a file")
            if path.suffix.lower() in IMAGE_SUFFIXES:
                self._image = cv2.imread(str(path), cv2.IMREAD_COLOR)
                if self._image is None:
                    raise InputError(f"{self.name}: unreadable or corrupt image")
                self.fps, self.frame_count = 0.0, 1
                self.height, self.width = self._image.shape[:2]
                return
        self._cap = self._open()
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count = count if count > 0 and not self.live else None  # header count; may be off by a few
        self.width = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
        self.height = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        if not self.live and not self.sequence and (self.width <= 0 or self.height <= 0):
            self.close()
            raise InputError(f"{self.name}: unreadable or corrupt video (no video stream)")

    def _open(self) -> cv2.VideoCapture:
        if isinstance(self.target, int):
            cap = cv2.VideoCapture(self.target)
        elif self.live:
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_TIMEOUT_MS,
                      cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_TIMEOUT_MS]
            cap = cv2.VideoCapture(str(self.target), cv2.CAP_FFMPEG, params)
        elif self.sequence:
            cap = cv2.VideoCapture(str(self.target), cv2.CAP_IMAGES)
        else:
            cap = cv2.VideoCapture(str(self.target), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            kind = "stream" if self.live else "image sequence" if self.sequence else "video"
            raise InputError(f"{self.name}: cannot open {kind} (unreadable, corrupt or unsupported)")
        return cap

    def __enter__(self) -> "VideoSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._cap is not None:
                self._cap.release()
                self._cap = None

    def planned_frames(self) -> Optional[int]:
        """How many frames ``frames()`` will yield, when known in advance (for progress bars)."""
        if self.frame_count is None:
            return self.sampling.frames
        if self.sampling.frames is not None:
            return min(self.sampling.frames, self.frame_count)
        if self.sampling.every is not None:
            return -(-self.frame_count // self.sampling.every)
        return self.frame_count

    def frames(self) -> Iterator[tuple[int, float, np.ndarray]]:
        """Yield (frame index, time in seconds, RGB uint8 frame) for the sampled frames.

        Files: frames between the sampled ones are skipped by seeking or grabbing (whichever is cheaper, see
        ``Seeker``), never converted; the time is index / fps. Live sources are read as they come (``frames=N``:
        the first N); their time is seconds since the source opened, by the clock when each frame arrived.
        Raises InputError when not a single frame decodes, and SourceLost when a live source stops delivering
        frames before it is closed or its N frames are read (a camera unplugged, a stream dropped or timed out).
        When a file's header over-counts frames (it can be off by a few), the samples past the real end are
        simply missing.
        """
        if self._image is not None:
            yield 0, 0.0, cv2.cvtColor(self._image, cv2.COLOR_BGR2RGB)
            return
        if self._cap is None:
            raise InputError(f"{self.name}: source is closed")
        gen = self._live_frames() if self.live else self._file_frames()
        yielded = 0
        try:
            for item in gen:
                yielded += 1
                yield item
        except cv2.error as exc:
            msg = " ".join(str(exc).split())
            if self.live:
                raise SourceLost(f"{self.name}: stream failed after {yielded} frames: {msg}") from None
            raise InputError(f"{self.name}: decoding failed after {yielded} frames: {msg}") from None
        finally:
            gen.close()
            self.close()
        if yielded == 0:
            what = "stream" if self.live else "video"
            raise InputError(f"{self.name}: no decodable frames (empty, truncated or corrupt {what})")

    def _live_frames(self) -> Iterator[tuple[int, float, np.ndarray]]:
        every = self.sampling.every or 1
        limit = self.sampling.frames
        t0 = time.monotonic()
        index, yielded = -1, 0
        while limit is None or yielded < limit:
            with self._lock:
                if self._cap is None:  # closed by the consumer: a stop, not a loss
                    return
                ok = self._cap.grab()
                if ok:
                    index += 1
                    if index % every:
                        continue
                    ok, bgr = self._cap.retrieve()
                    t = time.monotonic() - t0
            if not ok or bgr is None:
                if self._closed:
                    return
                if yielded == 0:
                    return  # frames() reports "no decodable frames"
                raise SourceLost(f"{self.name}: the stream stopped delivering frames after {yielded} "
                                 f"(ended, dropped, or nothing for {STREAM_TIMEOUT_MS // 1000} s)")
            yielded += 1
            yield index, t, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def _wanted(self) -> Iterator[int]:
        if self.sampling.frames is not None and self.frame_count is not None:
            return iter(even_indices(self.frame_count, self.sampling.frames).tolist())
        if self.sampling.frames is not None:  # no frame count (image sequence): the first N
            return iter(range(self.sampling.frames))
        return itertools.count(0, self.sampling.every or 1)

    def _file_frames(self) -> Iterator[tuple[int, float, np.ndarray]]:
        seeker = self.seeker
        if self.sequence:
            seeker.policy = "never"  # CAP_IMAGES reads file by file: grabbing one is cheap
        pos = 0  # index of the frame the next grab() returns
        for want in self._wanted():
            with self._lock:
                if self._cap is None:
                    return
                gap, seeked = want - pos, False
                if seeker.should_seek(gap):
                    t0 = time.perf_counter()
                    self._cap.set(cv2.CAP_PROP_POS_FRAMES, float(want))
                    if int(round(self._cap.get(cv2.CAP_PROP_POS_FRAMES))) == want:
                        ok = self._cap.grab()
                        seeker.record_seek(time.perf_counter() - t0)
                        seeked = True
                    else:
                        # OpenCV did not land on the frame (a broken index, a variable frame rate): reopen and
                        # grab from the start, which is always exact, and never seek this file again
                        seeker.policy = "never"
                        self._cap.release()
                        self._cap = self._open()
                        gap = want
                if not seeked:
                    t0, ok = time.perf_counter(), True
                    for _ in range(gap):
                        if not self._cap.grab():
                            ok = False
                            break
                    seeker.record_grabs(gap, time.perf_counter() - t0)
                    ok = ok and self._cap.grab()
                pos = want + 1
                if not ok:
                    return  # past the real end
                ok, bgr = self._cap.retrieve()
            if not ok or bgr is None:
                return
            t = want / self.fps if self.fps > 0 else 0.0
            yield want, t, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
