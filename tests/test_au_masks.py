"""aunet.faces.au_masks: the 15 AU regions, each where its landmark group is; hull mask; grid downsampling."""
import time

import numpy as np
import pytest

from aunet.faces.au_masks import (
    AU_LABELS,
    AU_REGIONS,
    MIRROR,
    au_ellipses,
    au_masks,
    au_region_masks,
    default_sigma,
    downsample_masks,
    face_axes,
    face_hull_mask,
)
from test_data import astronaut_crop

SIZE = 224


@pytest.fixture(scope="module")
def landmarks():
    """The astronaut's 68 landmarks in a 224 px crop (dlib, as aunet-prep makes them)."""
    pytest.importorskip("dlib")
    return astronaut_crop(SIZE)[1]


def test_the_15_aus_of_bp4d_and_disfa():
    assert AU_LABELS == tuple(f"AU{n}" for n in (1, 2, 4, 6, 7, 9, 10, 12, 14, 15, 17, 23, 24, 25, 26))
    assert (MIRROR[MIRROR] == np.arange(68)).all()  # the mirror is an involution


def test_masks_shape_range_and_smoothing(landmarks):
    masks = au_masks(landmarks, SIZE)
    assert masks.shape == (15, SIZE, SIZE) and masks.dtype == np.float32
    assert masks.min() >= 0.0 and masks.max() <= 1.0
    assert (masks.reshape(15, -1).max(1) > 0.95).all()  # every region is present, its core at ~1
    soft = ((masks > 0.05) & (masks < 0.95)).sum((1, 2))
    assert (soft > 0).all()  # Gaussian edges
    hard = au_masks(landmarks, SIZE, sigma=0)
    assert set(np.unique(hard)) <= {0.0, 1.0}
    np.testing.assert_array_equal(hard, au_region_masks(landmarks, SIZE))
    assert default_sigma(224) == 3.0 and default_sigma(112) == 1.5


def _centroid(mask):
    ys, xs = np.nonzero(mask > 0.5)
    return np.array([xs.mean(), ys.mean()])


def test_each_au_mask_is_centred_on_its_landmark_group(landmarks):
    ex, down, d = face_axes(landmarks)
    masks = au_masks(landmarks, SIZE)
    midline_x = landmarks[27:31, 0].mean()
    for k, region in enumerate(AU_REGIONS):
        part = region.part
        centres = []
        for idx, out_dir in [(list(part.indices), -ex)] + ([(list(MIRROR[list(part.indices)]), ex)] if region.mirrored else []):
            group = landmarks[idx]
            shifted = group + d * (part.shift[0] * out_dir + part.shift[1] * down)
            centres.append((np.concatenate([group, shifted]) if part.keep_original else shifted).mean(0))
        if region.mirrored:
            left, right = masks[k].copy(), masks[k].copy()
            left[:, int(midline_x):] = 0
            right[:, : int(midline_x)] = 0
            got = [_centroid(left), _centroid(right)]
        else:
            got = [_centroid(masks[k])]
        for c_got, c_exp in zip(got, centres):
            assert np.linalg.norm(c_got - c_exp) < 0.15 * d, (region.label, c_got, c_exp)


def test_regions_sit_on_the_right_facial_features(landmarks):
    masks = au_masks(landmarks, SIZE)
    at = lambda k, pt: masks[AU_LABELS.index(k), int(round(pt[1])), int(round(pt[0]))]  # noqa: E731
    assert at("AU7", landmarks[36:42].mean(0)) > 0.9 and at("AU7", landmarks[42:48].mean(0)) > 0.9
    assert at("AU25", landmarks[60:68].mean(0)) > 0.9
    assert at("AU9", landmarks[29]) > 0.9
    assert at("AU7", landmarks[8]) == 0.0 and at("AU25", landmarks[30]) < 0.05
    brow_y = landmarks[17:27, 1].mean()
    assert _centroid(masks[AU_LABELS.index("AU1")])[1] < brow_y  # brow raisers reach up, above the brows
    assert _centroid(masks[AU_LABELS.index("AU17")])[1] > landmarks[57, 1]  # chin raiser below the lower lip


def test_masks_follow_a_rotated_face(landmarks):
    # rot90 (counter-clockwise): pixel (x, y) -> (y, W - 1 - x)
    rotated = np.stack([landmarks[:, 1], SIZE - 1 - landmarks[:, 0]], axis=1)
    a = np.rot90(au_region_masks(landmarks, SIZE), k=1, axes=(1, 2)) > 0
    b = au_region_masks(rotated, SIZE) > 0
    iou = (a & b).sum((1, 2)) / (a | b).sum((1, 2))
    assert (iou > 0.85).all(), iou


def test_hull_mask_covers_the_landmarks_and_nothing_far_outside(landmarks):
    hull = face_hull_mask(landmarks, SIZE)
    assert hull.shape == (SIZE, SIZE) and hull.dtype == np.float32
    r = np.round(landmarks).astype(int)
    assert (hull[r[:, 1], r[:, 0]] == 1).all()
    x0, y0 = landmarks.min(0)
    x1, y1 = landmarks.max(0)
    ys, xs = np.nonzero(hull)
    assert xs.min() >= x0 - 1 and xs.max() <= x1 + 1 and ys.min() >= y0 - 1 and ys.max() <= y1 + 1


def test_downsample_to_the_feature_grid_is_an_area_average(landmarks):
    masks = au_masks(landmarks, SIZE)
    grid = downsample_masks(masks, 14)
    assert grid.shape == (15, 14, 14)
    np.testing.assert_allclose(grid, masks.reshape(15, 14, 16, 14, 16).mean((2, 4)), atol=1e-5)
    assert downsample_masks(masks[None], 7).shape == (1, 15, 7, 7)


def test_ellipses_and_bad_landmarks(landmarks):
    ellipses = au_ellipses(landmarks)
    assert [len(e) for e in ellipses] == [2 if r.mirrored else 1 for r in AU_REGIONS]
    with pytest.raises(ValueError):
        au_masks(np.zeros((68, 2)), SIZE)  # degenerate: the eyes coincide
    with pytest.raises(ValueError):
        au_masks(landmarks[:60], SIZE)


def test_fast_enough_for_the_data_loader(landmarks):
    au_masks(landmarks, SIZE)
    t0 = time.perf_counter()
    for _ in range(10):
        au_masks(landmarks, SIZE)
    per_face = (time.perf_counter() - t0) / 10
    assert per_face < 0.05, f"{per_face * 1e3:.1f} ms per face"
