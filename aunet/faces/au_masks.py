"""The 15 AU-related regions (Y_Att of Eq. 1, and the regions TAP removes), from 68 dlib landmarks (torch-free).

As the paper (section 4.1) says after EAC-Net [32] and JAA-Net [44]: each AU's region is an ellipse fitted to
an AU-specific landmark group, then smoothed with a Gaussian of sigma = 3 (at 224 px). The 15 AUs are the
union of the AUs that EAC-Net / JAA-Net locate on BP4D (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24) and DISFA
(9, 25, 26). EAC-Net places AU centres at offsets from landmarks measured in units of the distance between
the inner eye corners ("d"); the shifts below use that unit, along the face's own axes (rotation-invariant):
"out" = away from the face's vertical midline, "down" = from the eyes towards the mouth.

Ellipse fit: centre = mean of the group's (shifted) points; axes along the principal directions of their
spread, semi-axis = sqrt(3) * std (exact for points spread evenly along a segment), at least ``min_axes``.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

PAPER_SIZE = 224
PAPER_SIGMA = 3.0  # Gaussian smoothing of the AU masks at 224 px (paper, section 4.1)


@dataclass(frozen=True)
class Part:
    """One ellipse: a landmark group (the subject's right side for mirrored parts), shifted by (out, down) d."""

    indices: tuple[int, ...]
    shift: tuple[float, float] = (0.0, 0.0)  # (out, down) in units of d; negative down = up
    keep_original: bool = False  # fit the ellipse to the shifted AND the original points (spans both)
    min_axes: tuple[float, float] = (0.2, 0.2)  # minimum semi-axes (major, minor) in units of d


@dataclass(frozen=True)
class AURegion:
    au: int
    name: str  # FACS name
    group: str  # the landmark group, in words (docs/preprocessing.md repeats this table)
    part: Part
    mirrored: bool  # True: the part and its left-right mirror (two ellipses)

    @property
    def label(self) -> str:
        return f"AU{self.au}"


# dlib 68-point indices of each landmark's left-right mirror (iBUG 300-W layout).
MIRROR = np.array(
    [16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0,  # jaw
     26, 25, 24, 23, 22, 21, 20, 19, 18, 17,  # brows
     27, 28, 29, 30, 35, 34, 33, 32, 31,  # nose
     45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40,  # eyes
     54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55,  # outer lips
     64, 63, 62, 61, 60, 67, 66, 65],  # inner lips
    dtype=np.int64,
)

AU_REGIONS: tuple[AURegion, ...] = (
    AURegion(1, "Inner brow raiser", "inner brow (19-21), and the same points 1/2 d up",
             Part((19, 20, 21), (0.0, -0.5), True), True),
    AURegion(2, "Outer brow raiser", "outer brow (17-19), and the same points 1/3 d up",
             Part((17, 18, 19), (0.0, -1 / 3), True), True),
    AURegion(4, "Brow lowerer", "inner brows of both sides (20-23), and the same points 1/3 d down",
             Part((20, 21, 22, 23), (0.0, 1 / 3), True, (0.3, 0.2)), False),
    AURegion(6, "Cheek raiser", "lower eyelid (40, 41) moved 1 d down",
             Part((40, 41), (0.0, 1.0), False, (0.35, 0.25)), True),
    AURegion(7, "Lid tightener", "eye contour (36-41)",
             Part((36, 37, 38, 39, 40, 41), (0.0, 0.0), False, (0.3, 0.2)), True),
    AURegion(9, "Nose wrinkler", "nose bridge and nostril wings (27-31, 35)",
             Part((27, 28, 29, 30, 31, 35), (0.0, 0.0), False, (0.3, 0.25)), False),
    AURegion(10, "Upper lip raiser", "nose base and upper lip (31, 33, 35, 49-53)",
             Part((31, 33, 35, 49, 50, 51, 52, 53), (0.0, 0.0), False, (0.3, 0.2)), False),
    AURegion(12, "Lip corner puller", "lip corner (48, 49, 59, 60) moved 0.15 d out and 0.15 d up",
             Part((48, 49, 59, 60), (0.15, -0.15), False, (0.3, 0.25)), True),
    AURegion(14, "Dimpler", "lip corner (48, 49, 59, 60) moved 0.3 d out",
             Part((48, 49, 59, 60), (0.3, 0.0), False, (0.25, 0.25)), True),
    AURegion(15, "Lip corner depressor", "lip corner (48, 59, 60) moved 0.1 d out and 0.3 d down",
             Part((48, 59, 60), (0.1, 0.3), False, (0.25, 0.25)), True),
    AURegion(17, "Chin raiser", "lower lip (56-58) moved 1/2 d down",
             Part((56, 57, 58), (0.0, 0.5), False, (0.45, 0.3)), False),
    AURegion(23, "Lip tightener", "outer lip contour (48-59)",
             Part(tuple(range(48, 60)), (0.0, 0.0), False, (0.3, 0.2)), False),
    AURegion(24, "Lip pressor", "middle of both lips, corners excluded (50-52, 56-58, 61-63, 65-67)",
             Part((50, 51, 52, 56, 57, 58, 61, 62, 63, 65, 66, 67), (0.0, 0.0), False, (0.25, 0.2)), False),
    AURegion(25, "Lips part", "inner lip contour (60-67)",
             Part(tuple(range(60, 68)), (0.0, 0.0), False, (0.3, 0.12)), False),
    AURegion(26, "Jaw drop", "mouth corners, lower lip and chin (48, 54, 57, 6, 8, 10)",
             Part((48, 54, 57, 6, 8, 10), (0.0, 0.0), False, (0.4, 0.3)), False),
)
AU_LABELS: tuple[str, ...] = tuple(r.label for r in AU_REGIONS)
NUM_AUS = len(AU_REGIONS)

Ellipse = tuple[tuple[float, float], tuple[float, float], float]  # cv2 RotatedRect: centre, full axes, degrees


def _check_landmarks(landmarks) -> np.ndarray:
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.shape != (68, 2) or not np.isfinite(pts).all():
        raise ValueError(f"expected 68 finite landmarks [68, 2], got shape {pts.shape}")
    return pts


def face_axes(landmarks) -> tuple[np.ndarray, np.ndarray, float]:
    """(right_to_left unit vector, down unit vector, d = inner eye-corner distance) of a face."""
    pts = _check_landmarks(landmarks)
    across = pts[42:48].mean(0) - pts[36:42].mean(0)  # subject's right eye -> left eye (image left -> right)
    norm = np.linalg.norm(across)
    d = float(np.linalg.norm(pts[42] - pts[39]))
    if norm < 1e-6 or d < 1e-6:
        raise ValueError("degenerate landmarks: the eyes coincide")
    ex = across / norm
    down = np.array([-ex[1], ex[0]])  # +90 degrees in image coordinates (y down): points to the mouth
    if np.dot(pts[57] - pts[27], down) < 0:  # a mirrored face: keep "down" towards the mouth
        down = -down
    return ex, down, d


def _fit_ellipse(points: np.ndarray, min_axes: tuple[float, float], d: float) -> Ellipse:
    centre = points.mean(0)
    cov = np.cov((points - centre).T) if len(points) > 1 else np.zeros((2, 2))
    evals, evecs = np.linalg.eigh(cov)  # ascending
    major_dir = evecs[:, 1]
    semi_major = max(np.sqrt(3.0 * max(evals[1], 0.0)), min_axes[0] * d)
    semi_minor = max(np.sqrt(3.0 * max(evals[0], 0.0)), min_axes[1] * d)
    angle = float(np.degrees(np.arctan2(major_dir[1], major_dir[0])))
    return (float(centre[0]), float(centre[1])), (2.0 * semi_major, 2.0 * semi_minor), angle


def au_ellipses(landmarks) -> list[list[Ellipse]]:
    """For each of the 15 AUs, its ellipses (one, or two for mirrored AUs) in the landmarks' coordinates."""
    pts = _check_landmarks(landmarks)
    ex, down, d = face_axes(pts)
    out: list[list[Ellipse]] = []
    for region in AU_REGIONS:
        part = region.part
        sides = [(np.array(part.indices), -ex)]  # the subject's right side: "out" is towards image left
        if region.mirrored:
            sides.append((MIRROR[list(part.indices)], ex))
        ellipses = []
        for idx, out_dir in sides:
            group = pts[idx]
            shifted = group + d * (part.shift[0] * out_dir + part.shift[1] * down)
            fit_pts = np.concatenate([group, shifted]) if part.keep_original else shifted
            ellipses.append(_fit_ellipse(fit_pts, part.min_axes, d))
        out.append(ellipses)
    return out


def au_region_masks(landmarks, size: int) -> np.ndarray:
    """The 15 AU ellipses filled, before smoothing: uint8 [15, size, size] in {0, 1}."""
    masks = np.zeros((NUM_AUS, size, size), dtype=np.uint8)
    for k, ellipses in enumerate(au_ellipses(landmarks)):
        for ellipse in ellipses:
            cv2.ellipse(masks[k], ellipse, 1, thickness=-1, lineType=cv2.LINE_8)
    return masks


def default_sigma(size: int) -> float:
    """sigma = 3 at 224 px, scaled with the crop size so that masks look the same at any size."""
    return PAPER_SIGMA * size / PAPER_SIZE


def au_masks(landmarks, size: int, sigma: float | None = None) -> np.ndarray:
    """Y_Att at image size: float32 [15, size, size] in [0, 1] (order: AU_REGIONS), from landmarks in crop
    coordinates. The trainer area-resizes them to the feature grid (``downsample_masks``)."""
    hard = au_region_masks(landmarks, size)
    sigma = default_sigma(size) if sigma is None else float(sigma)
    # One blur over all 15 masks as channels (OpenCV filters [H, W, C] with any C).
    stacked = np.ascontiguousarray(hard.transpose(1, 2, 0), dtype=np.float32)
    if sigma > 0:
        stacked = cv2.GaussianBlur(stacked, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_CONSTANT)
    if stacked.ndim == 2:
        stacked = stacked[:, :, None]
    return np.clip(stacked.transpose(2, 0, 1), 0.0, 1.0).astype(np.float32, copy=False)


def face_hull_mask(landmarks, size: int) -> np.ndarray:
    """M_f: the convex hull of the 68 landmarks filled, float32 [size, size] in {0, 1}."""
    pts = _check_landmarks(landmarks)
    hull = cv2.convexHull(np.round(pts).astype(np.int32))
    mask = np.zeros((size, size), dtype=np.uint8)
    cv2.fillConvexPoly(mask, hull, 1)
    return mask.astype(np.float32)


def downsample_masks(masks: np.ndarray, grid: int) -> np.ndarray:
    """Area-resize masks [..., S, S] to [..., grid, grid] (Y_Att at the feature size)."""
    masks = np.asarray(masks, dtype=np.float32)
    lead, (h, w) = masks.shape[:-2], masks.shape[-2:]
    flat = masks.reshape(-1, h, w).transpose(1, 2, 0)
    out = np.empty((grid, grid, flat.shape[2]), dtype=np.float32)
    for c0 in range(0, flat.shape[2], 256):  # cv2.resize takes at most 512 channels
        chunk = cv2.resize(np.ascontiguousarray(flat[:, :, c0 : c0 + 256]), (grid, grid), interpolation=cv2.INTER_AREA)
        out[:, :, c0 : c0 + 256] = chunk.reshape(grid, grid, -1)
    return out.transpose(2, 0, 1).reshape(*lead, grid, grid)
