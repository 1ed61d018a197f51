"""aunet.faces.crop: the CropSpec geometry (centre, scale, padding at frame edges) and the frame -> crop affine."""
import cv2
import numpy as np
import pytest

from aunet.faces.crop import crop_box, crop_face, invert_affine, to_crop_coords
from aunet.spec import CropSpec


def test_crop_box_is_the_scaled_square_centred_on_the_box():
    # a 100 x 200 box centred at (150, 150): side = 200 * 1.3 = 260
    region = crop_box([100, 50, 200, 250], CropSpec(margin=0.15), 1000, 1000)
    np.testing.assert_array_equal(region, [20, 20, 280, 280])
    region = crop_box([0, 0, 10, 10], CropSpec(margin=0.5), 5, 5)  # the frame size never moves the square
    np.testing.assert_array_equal(region, [-5, -5, 15, 15])


def test_crop_box_rejects_degenerate_boxes():
    for bad in ([10, 10, 10, 20], [10, 10, 5, 20], [0, 0, np.nan, 5]):
        with pytest.raises(ValueError):
            crop_box(bad, CropSpec(), 100, 100)


def _marked_frame(h, w, points):
    frame = np.zeros((h, w, 3), np.uint8)
    for x, y in points:
        cv2.circle(frame, (int(x), int(y)), 3, (255, 255, 255), -1)
    return frame


@pytest.mark.parametrize("size", [64, 224])  # enlarging and shrinking
def test_affine_maps_frame_points_to_where_they_appear_in_the_crop(size):
    pts = np.array([[160.0, 130.0], [230.0, 190.0], [200.0, 240.0]])
    frame = _marked_frame(400, 500, pts)
    crop, affine = crop_face(frame, [150, 100, 250, 250], size, CropSpec())
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
    mapped = to_crop_coords(pts, affine)
    for (x, y), (fx, fy) in zip(mapped, pts):
        single, _ = crop_face(_marked_frame(400, 500, [(fx, fy)]), [150, 100, 250, 250], size, CropSpec())
        ys, xs = np.nonzero(single[..., 0] > 64)
        w = single[ys, xs, 0].astype(float)
        # the dot's intensity-weighted centre is where the affine says
        assert abs((xs * w).sum() / w.sum() - x) < 0.75 and abs((ys * w).sum() / w.sum() - y) < 0.75
    back = to_crop_coords(mapped, invert_affine(affine))
    np.testing.assert_allclose(back, pts, atol=1e-9)


def test_crop_is_the_resized_slice_with_area_when_shrinking_and_linear_when_enlarging():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    box = [100, 60, 200, 160]  # side 130 -> region [85, 45, 215, 175]
    region = frame[45:175, 85:215]
    small, _ = crop_face(frame, box, 64, CropSpec())
    np.testing.assert_array_equal(small, cv2.resize(region, (64, 64), interpolation=cv2.INTER_AREA))
    big, _ = crop_face(frame, box, 224, CropSpec())
    np.testing.assert_array_equal(big, cv2.resize(region, (224, 224), interpolation=cv2.INTER_LINEAR))


def test_face_at_the_frame_edge_keeps_its_place_and_scale_with_black_padding():
    rng = np.random.default_rng(1)
    frame = rng.integers(1, 256, (200, 200, 3), dtype=np.uint8)  # no zero pixel in the frame
    box = [-20, 150, 60, 230]  # reaches out of the left and bottom edges
    crop, affine = crop_face(frame, box, 104, CropSpec())  # side 104: no resampling
    # the same crop from the frame embedded in a larger black canvas (no padding needed there)
    canvas = np.zeros((400, 400, 3), np.uint8)
    canvas[100:300, 100:300] = frame
    ref, _ = crop_face(canvas, [80, 250, 160, 330], 104, CropSpec())
    np.testing.assert_array_equal(crop, ref)
    # region [-32, 138, 72, 242]: columns left of x = 0 and rows below y = 199 are padding, the rest is frame
    np.testing.assert_allclose(to_crop_coords([[0, 199]], affine), [[32, 61]])
    assert crop[:, :32].max() == 0 and crop[62:].max() == 0
    assert (crop[:62, 32:] > 0).all()
    np.testing.assert_array_equal(crop[:62, 32:], frame[138:200, 0:72])


def test_crop_face_validates_the_frame():
    with pytest.raises(ValueError):
        crop_face(np.zeros((10, 10), np.uint8), [1, 1, 5, 5], 8, CropSpec())
    with pytest.raises(ValueError):
        crop_face(np.zeros((10, 10, 3), np.float32), [1, 1, 5, 5], 8, CropSpec())
