"""The Partial Face Mask M_p (section 3.3): the face hull minus 1-4 random AU regions, softened inside.

The blur stays inside M_f \\ R (erosion by the blur's radius first), so the background and the removed AU
regions are never touched by the blend."""
from __future__ import annotations

import cv2
import numpy as np

from aunet.faces.au_masks import NUM_AUS, au_region_masks, face_hull_mask


def partial_face_mask(landmarks, size: int, rng: np.random.Generator, num_removed=(1, 4),
                      removed=None) -> np.ndarray:
    """M_p: float32 [size, size] in [0, 1], zero outside the hull and on the removed AU regions.

    ``num_removed`` (lo, hi), inclusive: how many of the 15 AU regions are removed, drawn at random unless
    ``removed`` lists them (indices into AU_REGIONS). The blur radius is drawn per call (2-5 % of the crop
    side, as SBI varies its blend kernels)."""
    lo, hi = num_removed
    if not 0 <= lo <= hi <= NUM_AUS:
        raise ValueError(f"num_removed must satisfy 0 <= lo <= hi <= {NUM_AUS}, got {num_removed}")
    hull = face_hull_mask(landmarks, size) > 0
    regions = au_region_masks(landmarks, size) > 0
    radius = max(1, int(round(size * rng.uniform(0.02, 0.05))))
    if removed is not None:
        return soft_inside(hull & ~regions[list(removed)].any(0), radius)
    for _ in range(8):  # redraw the rare choice that leaves almost no face to tamper
        k = int(rng.integers(lo, hi + 1))
        chosen = rng.choice(NUM_AUS, size=k, replace=False)
        m_p = soft_inside(hull & ~regions[chosen].any(0), radius)
        if m_p.sum() >= 0.25 * hull.sum():
            break
    return m_p


def soft_inside(mask: np.ndarray, radius: int) -> np.ndarray:
    """A blurred version of a binary mask that is 0 wherever the mask is 0: erode by the kernel's radius
    (square element), then blur with a (2r+1)^2 Gaussian, whose support is that same square."""
    k = 2 * radius + 1
    eroded = cv2.erode(mask.astype(np.uint8), np.ones((k, k), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    soft = cv2.GaussianBlur(eroded.astype(np.float32), (k, k), sigmaX=radius / 2.0, borderType=cv2.BORDER_CONSTANT)
    soft[~mask.astype(bool)] = 0.0  # float rounding of the kernel tails, never more
    return np.clip(soft, 0.0, 1.0)
