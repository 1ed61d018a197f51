"""Image-level TAP (AU-related Region Modification, section 3.3): the Partial Face Mask M_p and self-blended
pseudo-fakes as SBI [45] makes them (numpy / OpenCV only, torch-free, reproducible from a np.random.Generator).

M_p = the landmarks' convex hull M_f minus a few random AU regions R, softened by a Gaussian blur that stays
inside M_f \\ R (erosion by the blur's radius first), so the background and the removed AU regions are never
touched. I_f = I_s * M_p + I_t * (1 - M_p) (Eq. 9), with I_s and I_t from the same real image by two
augmentation pipelines (colour and frequency transforms) and a small affine jitter of the source.
"""
from __future__ import annotations

import cv2
import numpy as np

from aunet.tap.masks import partial_face_mask

# SBI's source-side augmentations, with its ranges (albumentations' RGBShift, HueSaturationValue,
# RandomBrightnessContrast; OneOf(downscale, sharpen); JPEG) re-implemented in OpenCV.
RGB_SHIFT = 20  # per channel, in [-20, 20] grey levels
HSV_SHIFT = (10, 20, 20)  # hue (OpenCV's 0..180 scale), saturation, value
BRIGHTNESS_CONTRAST = 0.1
DOWNSCALE = (0.25, 0.5)
SHARPEN_ALPHA, SHARPEN_LIGHTNESS = (0.2, 0.5), (0.5, 1.0)
JPEG_QUALITY = (30, 100)
TRANSLATE = (0.03, 0.015)  # source jitter, fraction of the width / height (SBI's randaffine)
SCALE = (0.95, 1 / 0.95)


def _colour(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """RGB shift, hue/saturation/value shift (each p = 0.3), brightness/contrast (always)."""
    out = img.astype(np.float32)
    if rng.random() < 0.3:
        out += rng.uniform(-RGB_SHIFT, RGB_SHIFT, size=3).astype(np.float32)
    if rng.random() < 0.3:
        hsv = cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
        dh, ds, dv = (rng.uniform(-s, s) for s in HSV_SHIFT)
        hsv[..., 0] = np.mod(hsv[..., 0] + dh, 180.0)
        hsv[..., 1] += ds
        hsv[..., 2] += dv
        out = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    alpha = 1.0 + rng.uniform(-BRIGHTNESS_CONTRAST, BRIGHTNESS_CONTRAST)  # contrast
    beta = 255.0 * rng.uniform(-BRIGHTNESS_CONTRAST, BRIGHTNESS_CONTRAST)  # brightness
    out = out * alpha + beta
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _frequency(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One of: downscale-upscale, sharpen, JPEG re-compression."""
    h, w = img.shape[:2]
    choice = int(rng.integers(3))
    if choice == 0:
        f = rng.uniform(*DOWNSCALE)
        small = cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if choice == 1:
        alpha, light = rng.uniform(*SHARPEN_ALPHA), rng.uniform(*SHARPEN_LIGHTNESS)
        sharp = np.array([[-1, -1, -1], [-1, 8 + light, -1], [-1, -1, -1]], np.float32)
        identity = np.zeros((3, 3), np.float32)
        identity[1, 1] = 1.0
        kernel = (1 - alpha) * identity + alpha * sharp
        return np.clip(cv2.filter2D(img.astype(np.float32), -1, kernel), 0, 255).astype(np.uint8)
    quality = int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))
    ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].copy() if ok else img


def augment(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Φ: SBI's colour transforms, then one frequency transform (SBI's OneOf has p = 1)."""
    return _frequency(_colour(img, rng), rng)


def _jitter(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A small random translation and scale about the centre (the source's misalignment in SBI)."""
    h, w = img.shape[:2]
    s = rng.uniform(*SCALE)
    tx, ty = rng.uniform(-TRANSLATE[0], TRANSLATE[0]) * w, rng.uniform(-TRANSLATE[1], TRANSLATE[1]) * h
    m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), 0.0, s)
    m[:, 2] += (tx, ty)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def _check(crop: np.ndarray, mask: np.ndarray) -> None:
    if crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[2] != 3:
        raise ValueError(f"crop must be uint8 [S, S, 3], got {crop.dtype} {crop.shape}")
    if mask.shape != crop.shape[:2]:
        raise ValueError(f"mask {mask.shape} does not match the crop {crop.shape[:2]}")


def blend(source: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Eq. 9: I_f = I_s * M + I_t * (1 - M), rounded; pixels where M == 0 are exactly the target's."""
    m = mask.astype(np.float32)[..., None]
    mixed = np.rint(source.astype(np.float32) * m + target.astype(np.float32) * (1.0 - m))
    return np.where(m > 0, np.clip(mixed, 0, 255).astype(np.uint8), target)


def self_blend(crop: np.ndarray, mask: np.ndarray, rng: np.random.Generator, source: np.ndarray | None = None) -> np.ndarray:
    """An SBI fake of ``crop`` (the target I_t, left as it is): I_s = jitter(Φ(source or crop)), blended
    inside ``mask`` (Eq. 9). Pixels where the mask is 0 are exactly the crop's."""
    _check(crop, mask)
    src = augment(crop if source is None else source, rng)
    return blend(_jitter(src, rng), crop, mask)


def make_tap_pair(crop: np.ndarray, landmarks, rng: np.random.Generator, num_removed=(1, 4),
                  swap_prob: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A real/fake training pair: (real uint8, fake uint8, M_p float32). As SBI, either the source or (with
    probability ``swap_prob``) the target gets the augmentation Φ; the real image of the pair is the
    target I_t, so real and fake share every pixel outside M_p."""
    size = crop.shape[0]
    if crop.shape[:2] != (size, size):
        raise ValueError(f"crop must be square, got {crop.shape}")
    m_p = partial_face_mask(landmarks, size, rng, num_removed)
    if rng.random() < swap_prob:
        target = augment(crop, rng)
        return target, blend(_jitter(crop, rng), target, m_p), m_p
    return crop, self_blend(crop, m_p, rng), m_p


def make_tap_fake(crop: np.ndarray, landmarks, rng: np.random.Generator, num_removed=(1, 4)) -> tuple[np.ndarray, np.ndarray]:
    """(fake uint8, M_p float32) for a real crop that stays the pair's real image unchanged (I_t = crop)."""
    _, fake, m_p = make_tap_pair(crop, landmarks, rng, num_removed, swap_prob=0.0)
    return fake, m_p
