"""Face crops exactly as ``aunet.spec.CropSpec`` defines them (torch-free; training and the runtime share it).

The crop region is the square of side ``max(w, h) * (1 + 2 * margin)`` centred on the face box, snapped to
whole pixels (left/top = round(centre - side / 2), side = round(side)) so that cutting it is a plain slice.
Parts outside the frame are filled with ``pad_value``; the region is resized to ``size`` with INTER_AREA when
shrinking and INTER_LINEAR when enlarging. The affine that maps frame pixel coordinates (pixel centres at
integers, as dlib and OpenCV use) to crop coordinates is returned with every crop.
"""
from __future__ import annotations

import cv2
import numpy as np

from aunet.spec import CropSpec


def crop_box(box_xyxy, crop: CropSpec, frame_w: int, frame_h: int) -> np.ndarray:
    """The square region [x0, y0, x1, y1] (frame coordinates, whole pixels, may reach outside the frame)
    that ``crop_face`` cuts for a face box. frame_w / frame_h are part of the contract for callers that
    clip; the region itself never depends on them (a face at the frame edge keeps its place and scale)."""
    del frame_w, frame_h  # the square is padded, never shifted into the frame
    x0, y0, x1, y1 = (float(v) for v in np.asarray(box_xyxy, dtype=np.float64)[:4])
    if not (x1 > x0 and y1 > y0) or not np.isfinite([x0, y0, x1, y1]).all():
        raise ValueError(f"face box must be finite with x1 > x0 and y1 > y0, got {[x0, y0, x1, y1]}")
    w, h = x1 - x0, y1 - y0
    scale = 1.0 + 2.0 * crop.margin
    if crop.square:
        side_w = side_h = max(w, h) * scale
    else:
        side_w, side_h = w * scale, h * scale
    side_w, side_h = max(1, round(side_w)), max(1, round(side_h))
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    left, top = round(cx - side_w / 2.0), round(cy - side_h / 2.0)
    return np.array([left, top, left + side_w, top + side_h], dtype=np.float64)


def crop_affine(region_xyxy, size: int) -> np.ndarray:
    """The [2, 3] affine frame -> crop for a region resized to size x size (cv2.resize's pixel-centre
    convention: x_crop = (x - x0 + 0.5) * size / side - 0.5)."""
    x0, y0, x1, y1 = np.asarray(region_xyxy, dtype=np.float64)
    sx, sy = size / (x1 - x0), size / (y1 - y0)
    return np.array([[sx, 0.0, (0.5 - x0) * sx - 0.5], [0.0, sy, (0.5 - y0) * sy - 0.5]], dtype=np.float64)


def crop_face(frame_rgb: np.ndarray, box_xyxy, size: int, crop: CropSpec) -> tuple[np.ndarray, np.ndarray]:
    """Cut the face crop: (uint8 [size, size, 3], float64 [2, 3] affine frame -> crop)."""
    if frame_rgb.ndim != 3 or frame_rgb.shape[2] != 3 or frame_rgb.dtype != np.uint8:
        raise ValueError(f"frame must be uint8 [H, W, 3], got {frame_rgb.dtype} {frame_rgb.shape}")
    fh, fw = frame_rgb.shape[:2]
    region = crop_box(box_xyxy, crop, fw, fh)
    x0, y0, x1, y1 = (int(v) for v in region)
    # Slice the part inside the frame; pad only when the square reaches outside it.
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, fw), min(y1, fh)
    if ix0 == x0 and iy0 == y0 and ix1 == x1 and iy1 == y1:
        patch = frame_rgb[y0:y1, x0:x1]
    else:
        patch = np.full((y1 - y0, x1 - x0, 3), crop.pad_value, dtype=np.uint8)
        if ix1 > ix0 and iy1 > iy0:
            patch[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = frame_rgb[iy0:iy1, ix0:ix1]
    shrinking = (x1 - x0) > size or (y1 - y0) > size
    out = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return np.ascontiguousarray(out), crop_affine(region, size)


def to_crop_coords(points, affine) -> np.ndarray:
    """Map frame points [N, 2] through a [2, 3] affine (e.g. landmarks into crop coordinates)."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    a = np.asarray(affine, dtype=np.float64)
    return pts @ a[:, :2].T + a[:, 2]


def invert_affine(affine) -> np.ndarray:
    """The [2, 3] inverse of an affine (crop -> frame, e.g. to draw crop-space results on the frame)."""
    return cv2.invertAffineTransform(np.asarray(affine, dtype=np.float64))
