"""Video inputs: files, folders, globs, RTSP/HTTP URLs and webcams, decoded with OpenCV and sampled.

``resolve_inputs`` turns command-line arguments into sources; ``VideoSource.frames`` yields the sampled
frames (RGB uint8) one at a time, so memory does not depend on the video's length.
"""
from __future__ import annotations

import glob
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Union

import cv2
import numpy as np

from .errors import InputError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
# A network stream that stalls must not hang the pipeline (FFmpeg backend, OpenCV >= 4.6).
STREAM_TIMEOUT_MS = 10_000

Target = Union[str, int]  # a path or URL, or a webcam index


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
    return isinstance(target, int) or bool(_URL.match(str(target)))


def resolve_inputs(args: list[str]) -> list[Target]:
    """Expand arguments: a folder gives its videos (recursively, sorted), a glob its matches, digits a webcam.

    Paths are returned even when missing: the pipeline records them as per-input errors.
    """
    out: list[Target] = []
    for arg in args:
        path = Path(arg)
        if arg.isdigit() and not path.exists():
            out.append(int(arg))
        elif _URL.match(arg) or path.is_file():
            out.append(arg)
        elif path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
            if not found:
                raise InputError(f"no videos ({', '.join(VIDEO_SUFFIXES)}) under folder {arg}")
            out.extend(str(p) for p in found)
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


class VideoSource:
    """One input, opened with OpenCV. Iterate ``frames()`` once; ``close()`` (or ``with``) releases it."""

    def __init__(self, target: Target, sampling: Sampling = Sampling()):
        self.target = target
        self.name = source_name(target)
        self.sampling = sampling
        self.live = is_live(target)
        self._image: Optional[np.ndarray] = None
        self._cap: Optional[cv2.VideoCapture] = None
        self._lock = threading.Lock()  # close() may come from another thread than the one reading
        if not self.live:
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
        if not self.live and (self.width <= 0 or self.height <= 0):
            self.close()
            raise InputError(f"{self.name}: unreadable or corrupt video (no video stream)")

    def _open(self) -> cv2.VideoCapture:
        if isinstance(self.target, int):
            cap = cv2.VideoCapture(self.target)
        elif self.live:
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_TIMEOUT_MS,
                      cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_TIMEOUT_MS]
            cap = cv2.VideoCapture(str(self.target), cv2.CAP_FFMPEG, params)
        else:
            cap = cv2.VideoCapture(str(self.target), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            kind = "stream" if self.live else "video"
            raise InputError(f"{self.name}: cannot open {kind} (unreadable, corrupt or unsupported)")
        return cap

    def __enter__(self) -> "VideoSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
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

        Skipped frames are only grabbed (demuxed), not converted. Raises InputError when not a single frame
        decodes. On a live source ``frames=N`` stops after N frames. When the header over-counts frames (it can
        be off by a few), the samples past the real end are simply missing.
        """
        if self._image is not None:
            yield 0, 0.0, cv2.cvtColor(self._image, cv2.COLOR_BGR2RGB)
            return
        if self._cap is None:
            raise InputError(f"{self.name}: source is closed")
        wanted: Optional[np.ndarray] = None
        if self.sampling.frames is not None and self.frame_count is not None:
            wanted = even_indices(self.frame_count, self.sampling.frames)
        limit = self.sampling.frames if wanted is None else None
        every = self.sampling.every or 1
        yielded = 0
        index = -1
        next_wanted = 0  # position in ``wanted``
        try:
            while True:
                if wanted is not None and next_wanted >= len(wanted):
                    break
                if limit is not None and yielded >= limit:
                    break
                with self._lock:
                    if self._cap is None or not self._cap.grab():
                        break
                    index += 1
                    if wanted is not None:
                        if index != wanted[next_wanted]:
                            continue
                        next_wanted += 1
                    elif index % every:
                        continue
                    ok, bgr = self._cap.retrieve()
                    pos_ms = float(self._cap.get(cv2.CAP_PROP_POS_MSEC) or 0.0)
                if not ok or bgr is None:
                    break
                yielded += 1
                t = index / self.fps if self.fps > 0 else pos_ms / 1e3
                yield index, t, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        finally:
            self.close()
        if yielded == 0:
            raise InputError(f"{self.name}: no decodable frames (empty, truncated or corrupt video)")
