"""Annotated video: face boxes, fake scores and the tampered-region heatmap drawn over each frame."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from aunet.io import atomic_path

from .errors import InputError
from .results import FrameResult

HEATMAP_ALPHA = 0.45
_FAKE_BGR, _REAL_BGR = (40, 40, 230), (60, 200, 60)
_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}
VIDEO_CONTAINERS = tuple(_FOURCC)


def draw_frame(frame_rgb: np.ndarray, frame: FrameResult, threshold: float, crop_size: int) -> np.ndarray:
    """BGR image: each face's region map warped from its crop (side ``crop_size``) back onto the frame, then
    its box and fake score (red at or above ``threshold``, green below)."""
    h, w = frame_rgb.shape[:2]
    bgr = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP  # the face's affine maps frame -> crop
    ones = np.ones((crop_size, crop_size), np.float32)
    for face in frame.faces:
        heat = cv2.resize(face.region_map.astype(np.float32), (crop_size, crop_size), interpolation=cv2.INTER_LINEAR)
        heat = cv2.warpAffine(heat, face.affine, (w, h), flags=flags, borderValue=0.0)
        inside = cv2.warpAffine(ones, face.affine, (w, h), flags=flags, borderValue=0.0)
        colour = cv2.applyColorMap(np.clip(heat * 255.0, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
        a = (HEATMAP_ALPHA * inside)[..., None]
        bgr = (bgr * (1.0 - a) + colour * a).astype(np.uint8)
    for face in frame.faces:
        x0, y0, x1, y1 = (int(round(float(v))) for v in face.box)
        fake = face.score >= threshold
        c = _FAKE_BGR if fake else _REAL_BGR
        cv2.rectangle(bgr, (x0, y0), (x1, y1), c, 2)
        label = f"{'fake' if fake else 'real'} {face.score:.2f}"
        cv2.putText(bgr, label, (x0, max(12, y0 - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, c, 1, cv2.LINE_AA)
    return bgr


class AnnotatedVideoWriter:
    """Writes annotated frames to ``path`` atomically: the file appears only when the video is complete.

    The writer opens on the first frame (its size); ``close(ok=False)`` discards a partial video.
    """

    def __init__(self, path: str | Path, fps: float, threshold: float, crop_size: int):
        self.path = Path(path)
        self.fps = fps if fps and fps > 0 else 25.0
        self.threshold, self.crop_size = threshold, crop_size
        self.frames_written = 0
        self._stack = contextlib.ExitStack()
        self._writer: Optional[cv2.VideoWriter] = None

    def _open(self, width: int, height: int) -> None:
        fourcc = _FOURCC.get(self.path.suffix.lower())
        if fourcc is None:
            raise InputError(f"--save-video: unsupported container {self.path.suffix!r} (use {', '.join(_FOURCC)})")
        tmp = self._stack.enter_context(atomic_path(self.path))
        self._writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*fourcc), self.fps, (width, height))
        if not self._writer.isOpened():
            raise InputError(f"cannot write video {self.path}")

    def write(self, frame_rgb: np.ndarray, frame: FrameResult) -> None:
        if self._writer is None:
            self._open(frame_rgb.shape[1], frame_rgb.shape[0])
        self._writer.write(draw_frame(frame_rgb, frame, self.threshold, self.crop_size))
        self.frames_written += 1

    def close(self, ok: bool = True) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if ok:
            self._stack.close()  # renames the finished file into place
        else:
            self._stack.__exit__(InputError, InputError("aborted"), None)  # removes the partial file
