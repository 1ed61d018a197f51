"""aunet.faces.cache and aunet-prep (aunet.prep): cache round trip, resume, failure records, FF++ layout, exit codes, preview."""
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("dlib")
pytest.importorskip("skimage")

from aunet.faces.cache import CacheError, CacheWriter, FaceCache, VideoFaces, VideoRecord  # noqa: E402
from aunet.prep import Job, PrepError, discover, prepare_labeled  # noqa: E402
from aunet.prep.cli import main, prep_app, preview_app  # noqa: E402
from aunet.prep.run import sample_indices  # noqa: E402
from aunet.demo.sample_data import make_sample_images, make_sample_video, no_face_image, write_image  # noqa: E402
from aunet.spec import CropSpec  # noqa: E402
from test_eval import assert_error_line  # noqa: E402

runner = CliRunner()
SIZE = 112


@pytest.fixture(scope="module")
def mixed_input(tmp_path_factory):
    """real/: 2 face images, a no-face photo, a corrupt video, a corrupt image; fake/: a 6-frame video."""
    root = tmp_path_factory.mktemp("input")
    make_sample_images(root / "real", 2, np.random.default_rng(0))
    write_image(root / "real" / "coffee.jpg", no_face_image())
    (root / "real" / "broken.mp4").write_bytes(b"not a video" * 50)
    (root / "real" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    make_sample_video(root / "fake" / "clip.avi", frames=6, fps=10)
    (root / "notes.txt").write_text("ignored")
    return root


@pytest.fixture(scope="module")
def prepared(mixed_input, tmp_path_factory):
    out = tmp_path_factory.mktemp("cache") / "faces"
    result = runner.invoke(prep_app, [str(mixed_input), "--out", str(out), "--frames", "4", "--size", str(SIZE)])
    return out, result


def _faces(n, size=SIZE):
    rng = np.random.default_rng(n)
    return VideoFaces(
        crops=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
        landmarks=rng.uniform(0, size, (n, 68, 2)).astype(np.float32),
        frame_indices=np.arange(n, dtype=np.int64) * 3,
        boxes=rng.uniform(0, 100, (n, 4)).astype(np.float32),
        face_index=np.zeros(n, np.int64),
        scores=np.ones(n, np.float32),
    )


def test_cache_round_trip_and_checks(tmp_path):
    writer = CacheWriter(tmp_path, SIZE, CropSpec())
    faces = _faces(3)
    writer.write(VideoRecord("a/b.mp4", "/x/a/b.mp4", 1, "train", "Deepfakes", 3, "ok", num_frames=4, frames_without_face=1), faces)
    writer.write(VideoRecord("c.png", "/x/c.png", 0, "", "", 0, "no_face", num_frames=1, frames_without_face=1))
    cache = FaceCache(tmp_path, size=SIZE, crop=CropSpec())
    assert [r.video_id for r in cache.videos()] == ["a/b.mp4"]
    assert [r.status for r in cache.failures()] == ["no_face"]
    assert cache.videos(split="train", label=1)[0].method == "Deepfakes" and cache.videos(label=0) == []
    loaded = cache.load("a/b.mp4")
    for k in VideoFaces.FIELDS:
        np.testing.assert_array_equal(getattr(loaded, k), getattr(faces, k))
        assert getattr(loaded, k).dtype == getattr(faces, k).dtype
    with pytest.raises(CacheError, match="112px"):
        FaceCache(tmp_path, size=224)
    with pytest.raises(CacheError, match="cut with"):
        FaceCache(tmp_path, crop=CropSpec(margin=0.3))
    with pytest.raises(CacheError):
        CacheWriter(tmp_path, 224, CropSpec())  # resuming with another size
    with pytest.raises(CacheError):
        FaceCache(tmp_path / "nope")
    with pytest.raises(CacheError):
        cache.load("c.png")
    with pytest.raises(ValueError):  # record and faces disagree: nothing half-written
        writer.write(VideoRecord("d", "d", 0, "", "", 5, "ok"), _faces(2))
    assert not (tmp_path / "records" / "d.json").exists()
    assert not any(p.name.endswith(".tmp") or ".tmp." in p.name for p in tmp_path.rglob("*"))


def test_prep_records_failures_and_exits_0(prepared):
    out, result = prepared
    assert result.exit_code == 0, result.output
    cache = FaceCache(out, size=SIZE)
    status = {r.video_id: r.status for r in cache.records()}
    assert status == {
        "fake/clip.avi": "ok", "real/sample_00.png": "ok", "real/sample_01.png": "ok",
        "real/coffee.jpg": "no_face", "real/broken.mp4": "unreadable", "real/broken.png": "unreadable",
    }
    clip = next(r for r in cache.videos() if r.video_id == "fake/clip.avi")
    assert clip.label == 1 and clip.num_frames == 4 and clip.num_faces == 4
    assert {r.label for r in cache.records() if r.video_id.startswith("real/")} == {0}
    faces = cache.load("fake/clip.avi")
    np.testing.assert_array_equal(faces.frame_indices, sample_indices(6, 4))
    assert faces.crops.shape == (4, SIZE, SIZE, 3) and faces.landmarks.shape == (4, 68, 2)
    lm = faces.landmarks
    assert (lm > -0.1 * SIZE).all() and (lm < 1.1 * SIZE).all()  # landmarks are in crop coordinates
    assert json.loads((out / "cache.json").read_text())["crop"] == {"margin": 0.15, "square": True, "pad_value": 0}


def test_cached_crop_is_exactly_crop_face_of_the_frame(prepared, mixed_input):
    from aunet.faces.crop import crop_face

    out, _ = prepared
    cache = FaceCache(out)
    faces = cache.load("real/sample_01.png")
    frame = cv2.imread(str(mixed_input / "real" / "sample_01.png"))[..., ::-1].copy()
    crop, _ = crop_face(frame, faces.boxes[0], SIZE, cache.crop)
    np.testing.assert_array_equal(faces.crops[0], crop)


def test_rerun_skips_finished_videos(prepared, mixed_input):
    out, _ = prepared
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.json")}
    result = runner.invoke(prep_app, [str(mixed_input), "--out", str(out), "--frames", "4", "--size", str(SIZE)])
    assert result.exit_code == 0 and "resuming: 6 of 6" in result.output
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.json")} == stamps


def test_workers_give_the_same_cache(prepared, mixed_input, tmp_path):
    out, _ = prepared
    result = runner.invoke(prep_app, [str(mixed_input), "--out", str(tmp_path), "--frames", "4", "--size", str(SIZE), "--workers", "2"])
    assert result.exit_code == 0, result.output
    a, b = FaceCache(out), FaceCache(tmp_path)
    assert [r.to_dict() | {"source": ""} for r in a.records()] == [r.to_dict() | {"source": ""} for r in b.records()]
    np.testing.assert_array_equal(a.load("fake/clip.avi").crops, b.load("fake/clip.avi").crops)


def test_preview_writes_a_png(prepared, tmp_path):
    out, _ = prepared
    png = tmp_path / "grid.png"
    result = runner.invoke(preview_app, [str(out), "--out", str(png), "--rows", "3"])
    assert result.exit_code == 0, result.output
    img = cv2.imread(str(png))
    assert img.shape == (28 + 3 * SIZE, 5 * SIZE, 3)
    assert img[28:, :SIZE].std() > 10  # real faces, not a blank picture


def test_exit_codes(mixed_input, tmp_path, prepared, monkeypatch):
    """Every failure is one "aunet-prep: error:" line on stderr with its documented code; those found before any
    face is cut are the only line."""
    monkeypatch.delenv("AUNET_RETINAFACE_WEIGHTS", raising=False)
    out, _ = prepared
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    cases = [
        ([str(tmp_path / "missing"), "--out", str(tmp_path / "o1")], 2, "does not exist", True),
        ([str(mixed_input), "--out", str(out), "--size", "224"], 2, "224px expected", True),  # cache made with another size
        ([str(mixed_input), "--out", str(tmp_path / "o2"), "--detector", "retinaface"], 3, "RetinaFace", True),
        ([str(mixed_input / "notes.txt"), "--out", str(tmp_path / "o3")], 2, "not a video or an image", True),
        ([str(mixed_input / "real" / "coffee.jpg"), "--out", str(tmp_path / "o4")], 1, "no input gave a face", False),
        ([str(mixed_input), "--out", str(tmp_path / "o5"), "--split-dir", str(tmp_path / "nosplits")], 2, "--split-dir", True),
        ([str(out), "--out", str(tmp_path / "o6")], 2, f"aunet-train --data {out}", True),  # a cache given as INPUT
        ([str(mixed_input), "--out", str(a_file)], 2, "is a file", True),
        ([str(mixed_input), "--out", str(tmp_path / "o7"), "--retinaface-weights", str(tmp_path / "none.pth")], 3,
         "RetinaFace weights not found", True),
    ]
    for args, code, needle, alone in cases:
        result = runner.invoke(prep_app, args)
        assert result.exit_code == code, (args, result.output)
        assert "Traceback" not in result.output and result.stdout == ""
        line = assert_error_line(result.stderr, "aunet-prep", needle)
        assert not alone or result.stderr.strip() == line, (args, result.stderr)
    assert not (tmp_path / "o6").exists() and not (tmp_path / "o7").exists()  # refused before anything was written
    empty_cache = tmp_path / "o4"  # the faceless run above left a cache without faces
    for args, needle in [([str(tmp_path / "missing"), "--out", str(tmp_path / "g.png")], "does not exist"),
                         ([str(mixed_input), "--out", str(tmp_path / "g.png")], f"aunet-prep INPUT --out {mixed_input}"),
                         ([str(empty_cache), "--out", str(tmp_path / "g.png")], "no faces")]:
        result = runner.invoke(preview_app, args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.strip() == assert_error_line(result.stderr, "aunet-prep preview", needle)
    result = runner.invoke(preview_app, [str(out), "--out", str(a_file / "g.png")])  # its folder is a file
    assert result.exit_code == 4, result.output
    assert result.stderr.strip() == assert_error_line(result.stderr, "aunet-prep preview", "cannot write")


@pytest.mark.parametrize("argv,prog,needle", [
    (["IN", "--out", "O", "--faces", "some"], "aunet-prep", "'some' is not one of 'largest', 'all'"),
    (["IN", "--out", "O", "--detector", "mtcnn"], "aunet-prep", "'mtcnn' is not one of 'auto', 'retinaface', 'dlib'"),
    (["IN", "--out", "O", "--label", "maybe"], "aunet-prep", "'maybe' is not one of 'auto', 'real', 'fake'"),
    (["IN", "--out", "O", "--compression", "c99"], "aunet-prep", "'c99' is not one of 'all', 'raw', 'c23', 'c40'"),
    (["IN"], "aunet-prep", "Missing option '--out'"),
    (["preview", "DIR"], "aunet-prep preview", "Missing option '--out'"),
    (["preview", "DIR", "--out", "g.png", "--rows", "0"], "aunet-prep preview", "--rows"),
])
def test_usage_errors_are_refused_at_parse_time_in_one_line(argv, prog, needle, tmp_path, monkeypatch, capsys):
    """A value outside its choices is refused before INPUT is even looked at (IN does not exist here): exit 2,
    one line naming the allowed values."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    assert exc.value.code == 2 and out == ""
    assert err.strip() == assert_error_line(err, prog, needle)
    assert not (tmp_path / "O").exists()


def test_main_runs_prep_and_preview(prepared, tmp_path, capsys):
    """The console entry point dispatches `aunet-prep preview DIR --out grid.png` and exits 0."""
    out, _ = prepared
    with pytest.raises(SystemExit) as exc:
        main(["preview", str(out), "--out", str(tmp_path / "grid.png"), "--rows", "2"])
    assert exc.value.code == 0, capsys.readouterr().err
    assert cv2.imread(str(tmp_path / "grid.png")).shape == (28 + 2 * SIZE, 5 * SIZE, 3)


def test_ffpp_layout_labels_methods_and_splits(tmp_path):
    root = tmp_path / "ffpp"
    for rel in ("original_sequences/youtube/c23/videos/000.mp4", "original_sequences/youtube/c23/videos/999.mp4",
                "original_sequences/youtube/c40/videos/000.mp4",
                "manipulated_sequences/Deepfakes/c23/videos/000_003.mp4",
                "manipulated_sequences/Face2Face/c23/videos/003_000.mp4",
                "manipulated_sequences/Deepfakes/masks/videos/000_003.mp4"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")
    splits = tmp_path / "splits"
    splits.mkdir()
    for name, pairs in (("train", [["999", "998"]]), ("val", []), ("test", [["000", "003"]])):
        (splits / f"{name}.json").write_text(json.dumps(pairs))
    jobs = {j.video_id: j for j in discover(root, splits)}  # c23 by default: the paper's HQ
    assert sorted(jobs) == [
        "manipulated_sequences/Deepfakes/c23/videos/000_003.mp4",
        "manipulated_sequences/Face2Face/c23/videos/003_000.mp4",
        "original_sequences/youtube/c23/videos/000.mp4",
        "original_sequences/youtube/c23/videos/999.mp4",
    ]  # masks and c40 left out
    j = jobs["manipulated_sequences/Face2Face/c23/videos/003_000.mp4"]
    assert (j.label, j.method, j.split) == (1, "Face2Face", "test")
    assert jobs["original_sequences/youtube/c23/videos/999.mp4"].split == "train"
    assert (jobs["original_sequences/youtube/c23/videos/000.mp4"].label, jobs["original_sequences/youtube/c23/videos/000.mp4"].split) == (0, "test")
    assert len(discover(root, splits, compression="all")) == 5
    with pytest.raises(PrepError, match="no raw videos"):
        discover(root, splits, compression="raw")
    (splits / "val.json").write_text(json.dumps({"000": "003"}))  # not FF++'s list of pairs
    with pytest.raises(PrepError, match="not a list of .target, source. id pairs"):
        discover(root, splits)
    (splits / "val.json").unlink()
    with pytest.raises(PrepError, match="val.json"):
        discover(root, splits)
    with pytest.raises(PrepError, match="without its split files: pass --split-dir"):
        discover(root, None)  # no split files in ROOT/splits or ROOT: refused, never "no split"


FFPP_TREE = {
    # the paper's training data: YouTube reals and the four methods, c23
    "original_sequences/youtube/c23/videos/000.mp4": ("train", 0, ""),
    "original_sequences/youtube/c23/videos/002.mp4": ("val", 0, ""),
    "original_sequences/youtube/c23/videos/004.mp4": ("test", 0, ""),
    "manipulated_sequences/Deepfakes/c23/videos/000_001.mp4": ("train", 1, "Deepfakes"),
    "manipulated_sequences/NeuralTextures/c23/videos/005_004.mp4": ("test", 1, "NeuralTextures"),
    # refused: no split file lists it
    "original_sequences/youtube/c23/videos/999.mp4": None,
    # left out quietly: another compression, a method's tampering masks
    "original_sequences/youtube/c40/videos/000.mp4": None,
    "manipulated_sequences/Deepfakes/masks/videos/000_001.mp4": None,
    # excluded: DFD (a test set of the paper), FaceShifter, an unknown folder
    "original_sequences/actors/c23/videos/01__walking.mp4": None,
    "original_sequences/actors/c23/videos/02__talking.mp4": None,
    "manipulated_sequences/DeepFakeDetection/c23/videos/01_02__walking__ABC.mp4": None,
    "manipulated_sequences/FaceShifter/c23/videos/000_001.mp4": None,
    "downloads/c23/videos/extra.mp4": None,
}


@pytest.fixture(scope="module")
def ffpp_tree(tmp_path_factory):
    """A FaceForensics++ tree of tiny real face videos (one clip copied everywhere), with its split files."""
    import shutil

    root = tmp_path_factory.mktemp("ffpp") / "FF++"
    clip = make_sample_video(root.parent / "clip.mp4", frames=2, fps=10, size=(320, 240))
    for rel in FFPP_TREE:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(clip, root / rel)
    (root / "splits").mkdir()
    for name, pairs in (("train", [["000", "001"]]), ("val", [["002", "003"]]), ("test", [["004", "005"]])):
        (root / "splits" / f"{name}.json").write_text(json.dumps(pairs))
    return root


def test_ffpp_prep_takes_the_papers_protocol_only_and_reports_the_rest(ffpp_tree, tmp_path):
    out = tmp_path / "faces"
    result = runner.invoke(prep_app, [str(ffpp_tree), "--out", str(out), "--frames", "2", "--size", str(SIZE)])
    assert result.exit_code == 0, result.output
    cache = FaceCache(out)
    got = {r.video_id: (r.split, r.label, r.method) for r in cache.records()}
    assert got == {k: v for k, v in FFPP_TREE.items() if v is not None}
    assert all(r.status == "ok" for r in cache.records())
    excluded = [line for line in result.stderr.splitlines() if line.startswith("FF++: excluded")]
    assert excluded == ["FF++: excluded 5 videos outside the paper's training data (original_sequences/youtube and "
                        "Deepfakes, Face2Face, FaceSwap, NeuralTextures): downloads 1, "
                        "manipulated_sequences/DeepFakeDetection 1, manipulated_sequences/FaceShifter 1, "
                        "original_sequences/actors 2"]
    refused = [line for line in result.stderr.splitlines() if line.startswith("FF++: refused")]
    assert refused == ["FF++: refused 1 video that no split file lists: original_sequences/youtube/c23/videos/999.mp4"]


def test_ffpp_without_split_files_or_with_foreign_ones_exits_2_and_writes_nothing(ffpp_tree, tmp_path):
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(ffpp_tree, bare, ignore=shutil.ignore_patterns("splits"))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    for name in ("train", "val", "test"):  # Celeb-DF-like names: they match no FF++ video
        (foreign / f"{name}.json").write_text(json.dumps([["id0_0000", "id1_0000"]]))
    cases = [
        ([str(bare)], "without its split files: pass --split-dir"),
        ([str(ffpp_tree), "--split-dir", str(foreign)], "list none of the 6 FF++ videos"),
    ]
    for args, needle in cases:
        out = tmp_path / "out"
        result = runner.invoke(prep_app, args + ["--out", str(out), "--frames", "2", "--size", str(SIZE)])
        assert result.exit_code == 2, result.output
        assert result.stderr.strip() == assert_error_line(result.stderr, "aunet-prep", needle)
        assert not out.exists()


def test_folder_names_give_labels_and_splits(tmp_path):
    for rel in ("train/real/a.png", "test/fake/b.mp4", "other/c.jpg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    got = {j.video_id: (j.label, j.split, j.kind) for j in discover(tmp_path)}
    assert got == {"train/real/a.png": (0, "train", "image"), "test/fake/b.mp4": (1, "test", "video"), "other/c.jpg": (-1, "", "image")}
    assert {j.label for j in discover(tmp_path, label="fake")} == {1}


def test_prepare_labeled_keeps_every_face(mixed_input, tmp_path):
    class File:
        def __init__(self, path, label):
            self.path, self.label, self.method = Path(path), label, ""

    files = [File(mixed_input / "real" / "sample_00.png", 0), File(mixed_input / "real" / "coffee.jpg", 0)]
    cache = prepare_labeled(files, tmp_path, size=SIZE)
    assert {r.status for r in cache.records()} == {"ok", "no_face"}
    assert {r.split for r in cache.records()} == {"test"} and cache.meta["faces"] == "all"


def test_sample_indices_spread_evenly():
    np.testing.assert_array_equal(sample_indices(100, 5), [0, 25, 50, 74, 99])
    np.testing.assert_array_equal(sample_indices(3, 32), [0, 1, 2])
    assert sample_indices(0, 8).size == 0


def test_preprocessing_modules_do_not_import_torch():
    code = (
        "import sys, aunet.faces.crop, aunet.faces, aunet.faces.au_masks, aunet.tap.sbi, aunet.faces.cache, aunet.prep.run, aunet.demo.sample_data\n"
        "import aunet.prep, aunet.prep.inputs, aunet.prep.cli\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_full_disk_exits_4_keeps_no_half_file_and_resumes(mixed_input, tmp_path, monkeypatch):
    import errno

    import aunet.faces.cache

    real_savez = aunet.faces.cache.np.savez

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(aunet.faces.cache.np, "savez", disk_full)
    args = [str(mixed_input / "real"), "--out", str(tmp_path), "--frames", "2", "--size", str(SIZE)]
    result = runner.invoke(prep_app, args)
    assert result.exit_code == 4 and "No space left" in result.output
    assert_error_line(result.stderr, "aunet-prep", "No space left")
    assert not list(tmp_path.rglob("*.npz")) and not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]
    oks = [r for r in FaceCache(tmp_path).records() if r.status == "ok"]
    assert oks == []  # a video whose faces could not be written is not recorded as done
    monkeypatch.setattr(aunet.faces.cache.np, "savez", real_savez)
    result = runner.invoke(prep_app, args)
    assert result.exit_code == 0, result.output
    assert len(FaceCache(tmp_path).videos()) == 2


def test_zero_frame_and_truncated_videos(tmp_path):
    from aunet.prep import PrepSettings
    from aunet.prep.run import FacePipeline

    empty = tmp_path / "empty.avi"
    writer = cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    writer.release()  # a valid container with no frame
    video = make_sample_video(tmp_path / "clip.avi", frames=8, fps=10, size=(320, 240))
    data = video.read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) // 2])  # the second half of the file is lost
    pipeline = FacePipeline(PrepSettings(size=SIZE, frames=8))
    rec, faces = pipeline.faces(Job("empty.avi", str(empty), "video"))
    assert (rec.status, rec.num_frames, faces) == ("no_frames", 0, None)
    rec, faces = pipeline.faces(Job("cut.avi", str(tmp_path / "cut.avi"), "video"))
    # MJPG frames are independent: the frames before the cut decode and are kept, the rest is skipped
    assert rec.status == "ok" and 0 < rec.num_frames < 8 and len(faces) == rec.num_faces == rec.num_frames


def test_sample_set_for_the_demo(tmp_path):
    from aunet.faces import DlibHogDetector
    from aunet.demo.sample_data import make_sample_set

    paths = make_sample_set(tmp_path, images=2, videos=1, frames=5)
    assert [p.name for p in paths] == ["sample_00.png", "sample_01.png", "clip_00.mp4"]
    cap = cv2.VideoCapture(str(paths[-1]))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(bgr[..., ::-1].copy())
    assert len(frames) == 5 and frames[0].shape == (480, 640, 3)
    assert not np.array_equal(frames[0], frames[-1])  # the face moves
    detector = DlibHogDetector()
    assert all(len(detector.detect(f)) == 1 for f in (frames[0], frames[-1]))
    assert all(len(detector.detect(cv2.imread(str(p))[..., ::-1].copy())) >= 1 for p in paths[:2])
