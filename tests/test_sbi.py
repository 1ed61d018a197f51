"""aunet.tap.sbi: the Partial Face Mask (inside the hull, removed AU regions excluded) and SBI blending (Eq. 9)."""
import numpy as np
import pytest

from aunet.faces.au_masks import AU_LABELS, au_region_masks, face_hull_mask
from aunet.tap.masks import partial_face_mask
from aunet.tap.sbi import augment, blend, make_tap_fake, make_tap_pair, self_blend
from test_data import astronaut_crop

SIZE = 112


@pytest.fixture(scope="module")
def face():
    """A 112 px crop of the astronaut and its landmarks (crop coordinates)."""
    pytest.importorskip("dlib")
    return astronaut_crop(SIZE)


def test_partial_mask_is_inside_the_hull_and_excludes_the_removed_regions(face):
    _, lm = face
    hull = face_hull_mask(lm, SIZE) > 0
    regions = au_region_masks(lm, SIZE) > 0
    removed = [AU_LABELS.index("AU7"), AU_LABELS.index("AU25")]
    m_p = partial_face_mask(lm, SIZE, np.random.default_rng(0), removed=removed)
    assert m_p.dtype == np.float32 and m_p.shape == (SIZE, SIZE)
    assert m_p.min() >= 0 and m_p.max() <= 1
    assert (m_p[~hull] == 0).all()
    assert (m_p[regions[removed].any(0)] == 0).all()
    assert ((m_p > 0) & (m_p < 1)).any() and (m_p > 0.99).sum() > 0.2 * hull.sum()  # soft edge, solid core


@pytest.mark.parametrize("seed", range(5))
def test_random_partial_masks_remove_1_to_4_regions(face, seed):
    _, lm = face
    regions = au_region_masks(lm, SIZE) > 0
    m_p = partial_face_mask(lm, SIZE, np.random.default_rng(seed))
    untouched = [k for k in range(15) if (m_p[regions[k]] == 0).all()]
    assert len(untouched) >= 1  # at least one AU region fully removed
    assert (m_p[face_hull_mask(lm, SIZE) == 0] == 0).all()
    assert m_p.sum() >= 0.25 * face_hull_mask(lm, SIZE).sum()


def test_blend_is_eq9_and_exact_outside_the_mask():
    rng = np.random.default_rng(0)
    src, tgt = (rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(2))
    mask = rng.uniform(0, 1, (16, 16)).astype(np.float32)
    mask[:4] = 0.0
    out = blend(src, tgt, mask)
    expected = np.rint(src * mask[..., None] + tgt * (1 - mask[..., None]))
    np.testing.assert_allclose(out, expected, atol=1)  # float32 vs float64 rounding
    np.testing.assert_array_equal(out[:4], tgt[:4])


def test_self_blend_changes_only_pixels_inside_the_mask(face):
    crop, lm = face
    m_p = partial_face_mask(lm, SIZE, np.random.default_rng(1))
    fake = self_blend(crop, m_p, np.random.default_rng(2))
    assert fake.dtype == np.uint8 and fake.shape == crop.shape
    np.testing.assert_array_equal(fake[m_p == 0], crop[m_p == 0])  # background and removed AUs: exact
    changed = (fake != crop).any(-1)
    assert changed[m_p > 0.99].mean() > 0.3  # the tampered region really differs


def test_tap_pair_shares_every_pixel_outside_m_p_and_is_reproducible(face):
    crop, lm = face
    for seed in range(6):  # covers both SBI branches (source or target augmented)
        real, fake, m_p = make_tap_pair(crop, lm, np.random.default_rng(seed))
        np.testing.assert_array_equal(real[m_p == 0], fake[m_p == 0])
        assert (fake != real).any(-1)[m_p > 0.99].mean() > 0.2
    a = make_tap_pair(crop, lm, np.random.default_rng(7))
    b = make_tap_pair(crop, lm, np.random.default_rng(7))
    c = make_tap_pair(crop, lm, np.random.default_rng(8))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[1], c[1])


def test_tap_fake_keeps_the_real_crop_as_target(face):
    crop, lm = face
    before = crop.copy()
    fake, m_p = make_tap_fake(crop, lm, np.random.default_rng(3))
    np.testing.assert_array_equal(crop, before)  # the input is not modified
    np.testing.assert_array_equal(fake[m_p == 0], crop[m_p == 0])
    assert (fake != crop).any()


def test_augment_changes_the_image_but_not_its_shape(face):
    crop, _ = face
    out = augment(crop, np.random.default_rng(0))
    assert out.shape == crop.shape and out.dtype == np.uint8 and not np.array_equal(out, crop)


def test_bad_inputs(face):
    crop, lm = face
    with pytest.raises(ValueError):
        self_blend(crop, np.zeros((8, 8), np.float32), np.random.default_rng(0))
    with pytest.raises(ValueError):
        partial_face_mask(lm, SIZE, np.random.default_rng(0), num_removed=(3, 1))
