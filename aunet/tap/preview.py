"""A picture of TAP for a person to check: real crops, their TAP fakes, M_p, the AU maps, the difference."""
from __future__ import annotations

import cv2
import numpy as np

from aunet.faces.au_masks import au_masks
from aunet.faces.cache import CacheError, FaceCache
from aunet.tap.sbi import make_tap_pair


def preview_grid(cache: FaceCache, rows: int = 6, seed: int = 0) -> np.ndarray:
    """An RGB picture: per row a real crop, its TAP fake, M_p, the 15 AU maps over the crop, |fake - real|."""
    videos = cache.videos()
    if not videos:
        raise CacheError(f"{cache.root} holds no faces to preview")
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
