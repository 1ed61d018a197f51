"""aunet.train.data: per-epoch frame sampling, hold-out, TAP pairs and the reals-then-fakes batch layout.

``build_face_cache`` (used by test_train / test_eval too) writes a real aunet.faces.cache cache of skimage's
astronaut face: dlib finds the face and its 68 landmarks once, then small random rotations, scalings, shifts
and brightness changes make distinct frames; crops are cut with aunet.faces.crop exactly as aunet-prep does.
"""
from __future__ import annotations

import functools

import numpy as np
import pytest


@functools.lru_cache(maxsize=None)
def astronaut_face():
    from skimage.data import astronaut

    from aunet.faces import DlibHogDetector, LandmarkPredictor

    img = astronaut()
    box = DlibHogDetector().detect(img)[0].box
    return img, box, LandmarkPredictor().predict(img, box)


def astronaut_crop(size: int):
    """The astronaut's face cropped as aunet-prep crops it (CropSpec) at ``size`` px, and its 68 landmarks in
    crop coordinates."""
    from aunet.faces.crop import crop_face, to_crop_coords
    from aunet.spec import CropSpec

    img, box, lm = astronaut_face()
    crop, affine = crop_face(img, box, size, CropSpec())
    return crop, to_crop_coords(lm, affine)


def astronaut_frames(n: int, size: int = 112, seed: int = 0):
    """n face crops [n, size, size, 3] and their landmarks [n, 68, 2] (crop coordinates)."""
    import cv2

    from aunet.faces.crop import crop_face, to_crop_coords
    from aunet.spec import CropSpec

    img, box, lm = astronaut_face()
    rng = np.random.default_rng(seed)
    centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
    crops, marks = [], []
    for _ in range(n):
        warp = cv2.getRotationMatrix2D(centre, rng.uniform(-12, 12), rng.uniform(0.85, 1.15))
        warp[:, 2] += rng.uniform(-10, 10, 2)
        frame = cv2.warpAffine(img, warp, img.shape[1::-1], borderMode=cv2.BORDER_REFLECT)
        frame = np.clip(frame * rng.uniform(0.8, 1.2) + rng.uniform(-20, 20), 0, 255).astype(np.uint8)
        frame_lm = to_crop_coords(lm, warp)
        crop, affine = crop_face(frame, np.r_[frame_lm.min(0), frame_lm.max(0)], size, CropSpec())
        crops.append(crop)
        marks.append(to_crop_coords(frame_lm, affine).astype(np.float32))
    return np.stack(crops), np.stack(marks)


def build_face_cache(root, videos, size: int = 112, seed: int = 0):
    """A cache with one entry per (video_id, num_faces, label[, split[, method]]); num_faces 0 records a
    video where no face was found (status "no_face")."""
    from aunet.faces.cache import CacheWriter, VideoFaces, VideoRecord
    from aunet.spec import CropSpec

    writer = CacheWriter(root, size, CropSpec())
    for i, spec in enumerate(videos):
        video_id, n, label = spec[:3]
        split = spec[3] if len(spec) > 3 else ""
        method = spec[4] if len(spec) > 4 else ""
        if n == 0:
            writer.write(VideoRecord(video_id, video_id, label, split, method, 0, "no_face", num_frames=3, frames_without_face=3))
            continue
        crops, marks = astronaut_frames(n, size, seed * 1000 + i)
        faces = VideoFaces(
            crops=crops, landmarks=marks, frame_indices=np.arange(n, dtype=np.int64),
            boxes=np.zeros((n, 4), np.float32), face_index=np.zeros(n, np.int64), scores=np.ones(n, np.float32),
        )
        writer.write(VideoRecord(video_id, video_id, label, split, method, n, "ok", num_frames=n + 1, frames_without_face=1), faces)
    return root


def test_sample_faces_draws_up_to_k_per_video_and_changes_per_epoch():
    from aunet.train.data import sample_faces

    class Rec:
        def __init__(self, vid, n):
            self.video_id, self.num_faces, self.label = vid, n, 0

    recs = [Rec("a", 30), Rec("b", 3)]
    e0, e0_again, e1 = sample_faces(recs, 8, 0, 0), sample_faces(recs, 8, 0, 0), sample_faces(recs, 8, 0, 1)
    assert sum(r.video_id == "a" for r in e0) == 8 and sum(r.video_id == "b" for r in e0) == 3
    assert len({r.row for r in e0 if r.video_id == "a"}) == 8  # no face twice
    assert e0 == e0_again and e0 != e1


def test_split_holds_out_videos_and_never_loses_the_only_one():
    from aunet.train.data import split_train_val

    class Rec:
        def __init__(self, vid, split=""):
            self.video_id, self.split = vid, split

    recs = [Rec(f"v{i}") for i in range(10)]
    train, val, _ = split_train_val(recs, 0.2, 0)
    assert len(val) == 2 and not {r.video_id for r in train} & {r.video_id for r in val}
    train, val, source = split_train_val(recs[:1], 0.2, 0)
    assert train == val == recs[:1] and "too few" in source
    explicit = [Rec("a", "train"), Rec("b", "val")]
    train, val, source = split_train_val(explicit, 0.5, 0)
    assert [r.video_id for r in val] == ["b"] and source == "cache val split"


def test_cross_protocol_batch_is_reals_then_their_fakes(torch, tmp_path):
    from aunet.faces.cache import FaceCache
    from aunet.config import ModelConfig
    from aunet.train.data import FaceDataset, collate_pairs, usable_records

    root = build_face_cache(tmp_path / "c", [("r1", 3, 0), ("r2", 2, -1), ("f1", 2, 1, "", "Deepfakes")])
    cfg = ModelConfig.named("small")
    records = usable_records(FaceCache(root), "cross")
    assert [r.video_id for r in records] == ["r1", "r2"]  # fakes never enter the cross protocol
    ds = FaceDataset(root, records, cfg, "cross", frames_per_video=8, seed=0)
    assert len(ds) == 5
    batch = collate_pairs([ds[i] for i in range(3)])
    s, g = cfg.img_size, cfg.grid
    assert batch["images"].shape == (6, 3, s, s) and batch["images"].dtype == torch.uint8
    assert batch["labels"].tolist() == [0, 0, 0, 1, 1, 1]
    assert batch["mask"].shape == (3, 1, s, s) and 0 <= float(batch["mask"].min()) and float(batch["mask"].max()) <= 1
    assert batch["token_labels"].shape == (6, g * g)
    assert batch["token_labels"][:3].sum() == 0 and batch["token_labels"][3:].sum() > 0  # fakes have tampered tokens
    assert batch["y_att"].shape == (6, 15, g, g) and torch.equal(batch["y_att"][:3], batch["y_att"][3:])
    # a fake differs from its real inside M_p only (up to SBI's augmentation of one side)
    assert not torch.equal(batch["images"][0], batch["images"][3])
    # the same index and epoch give the same pair (workers, ranks and resumed runs agree)
    a, b = ds[1], ds[1]
    assert torch.equal(a["fake"], b["fake"]) and torch.equal(a["mask"], b["mask"])
    ds.set_epoch(1)
    assert not torch.equal(ds[1]["mask"], a["mask"]) or not torch.equal(ds[1]["fake"], a["fake"])


def test_validation_set_is_fixed_and_keeps_reals_untouched(torch, tmp_path):
    from aunet.faces.cache import FaceCache
    from aunet.config import ModelConfig
    from aunet.train.data import FaceDataset

    root = build_face_cache(tmp_path / "c", [("r1", 2, 0)])
    cache = FaceCache(root)
    ds = FaceDataset(root, cache.videos(), ModelConfig.named("small"), "cross", seed=0, fixed=True)
    first = ds[0]
    ds.set_epoch(5)
    assert torch.equal(ds[0]["fake"], first["fake"])
    crop = cache.load("r1").crops[ds.faces[0].row]
    assert np.array_equal(first["real"].permute(1, 2, 0).numpy(), crop)


def test_in_protocol_needs_labels_and_gives_no_token_targets(torch, tmp_path):
    from aunet.faces.cache import FaceCache
    from aunet.config import ModelConfig
    from aunet.train.data import FaceDataset, collate_labeled, usable_records

    root = build_face_cache(tmp_path / "c", [("r1", 2, 0), ("u1", 2, -1), ("f1", 2, 1), ("t1", 2, 0, "test")])
    records = usable_records(FaceCache(root), "in")
    assert [r.video_id for r in records] == ["f1", "r1"]  # unlabeled and test-split videos are left out
    ds = FaceDataset(root, records, ModelConfig.named("small"), "in")
    batch = collate_labeled([ds[i] for i in range(len(ds))])
    assert sorted(batch["labels"].tolist()) == [0, 0, 1, 1]
    assert batch["token_labels"] is None and batch["mask"] is None
    assert batch["y_att"].shape[1] == 15


def test_crops_of_another_size_are_resized_with_their_landmarks(tmp_path):
    from aunet.faces.cache import FaceCache
    from aunet.config import ModelConfig
    from aunet.train.data import FaceDataset, usable_records

    root = build_face_cache(tmp_path / "c", [("r1", 1, 0)], size=160)
    ds = FaceDataset(root, usable_records(FaceCache(root), "cross"), ModelConfig.named("small"), "cross")
    item = ds[0]
    assert item["real"].shape == (3, 112, 112) and item["mask"].shape == (1, 112, 112)


def test_odd_batch_is_refused_for_pairs():
    from aunet.train.data import DataError, items_per_batch

    assert items_per_batch("cross", 32) == 16 and items_per_batch("in", 5) == 5
    with pytest.raises(DataError):
        items_per_batch("cross", 5)


def test_ffpp_videos_without_a_split_or_outside_the_protocol_never_train(tmp_path):
    """A cache of an FF++ tree (made before splits were required, or by hand): a record with an empty split,
    and DeepFakeDetection's reals (original_sequences/actors) or FaceShifter, stay out of both protocols;
    records of other inputs keep training with no split."""
    from aunet.faces.cache import FaceCache
    from aunet.train import load_train_config
    from aunet.train.data import open_training_data, usable_records

    yt, mt = "original_sequences/youtube/c23/videos", "manipulated_sequences"
    root = build_face_cache(tmp_path / "c", [
        (f"{yt}/000.mp4", 1, 0, "train"), (f"{yt}/001.mp4", 1, 0, "val"), (f"{yt}/002.mp4", 1, 0, "test"),
        (f"{yt}/999.mp4", 1, 0, ""),  # no split
        ("original_sequences/actors/c23/videos/01__walking.mp4", 1, 0, ""),
        (f"{mt}/Deepfakes/c23/videos/000_001.mp4", 1, 1, "train", "Deepfakes"),
        (f"{mt}/Deepfakes/c23/videos/999_998.mp4", 1, 1, "", "Deepfakes"),  # no split
        (f"{mt}/FaceShifter/c23/videos/000_001.mp4", 1, 1, "train", "FaceShifter"),
        (f"{mt}/DeepFakeDetection/c23/videos/01_02__walking.mp4", 1, 1, "", "DeepFakeDetection"),
    ], size=64)
    cache = FaceCache(root)
    assert [r.video_id for r in usable_records(cache, "cross")] == [f"{yt}/000.mp4", f"{yt}/001.mp4"]
    assert [r.video_id for r in usable_records(cache, "in")] == [
        f"{mt}/Deepfakes/c23/videos/000_001.mp4", f"{yt}/000.mp4", f"{yt}/001.mp4"]
    data = open_training_data(cache, load_train_config("small", {"batch_size": 4}))
    assert {r.video_id for r in data.train} == {f"{yt}/000.mp4"} and [r.video_id for r in data.val] == [f"{yt}/001.mp4"]
    assert data.refused == {"no train/val split": 1, "outside the paper's FF++ protocol": 1}
    # a folder of faces has no splits and trains as before
    plain = build_face_cache(tmp_path / "p", [("real/a.png", 1, 0), ("real/b.png", 1, 0)], size=64)
    assert len(usable_records(FaceCache(plain), "cross")) == 2
