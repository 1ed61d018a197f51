"""aunet.evaluate: labeled-set readers, the video protocol on a cache, aunet-eval end to end on raw files, and its
one-line errors."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from test_data import build_face_cache

TEST_MODEL = {"base": "small", "img_size": 64, "num_encoders": 1}


def assert_error_line(stderr: str, prog: str, needle: str = "") -> str:
    """The one ``prog: error: ...`` line of a failed command's stderr (progress lines may come before it)."""
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith(f"{prog}: error: ") and needle in errors[0], stderr
    return errors[0]


def mean_brightness(crops: np.ndarray) -> np.ndarray:
    """A deterministic scorer (stands in for a model): the crop's mean intensity in [0, 1]."""
    return crops.reshape(len(crops), -1).mean(axis=1) / 255.0


def test_csv_reader_header_or_not_relative_paths_and_words(tmp_path):
    from aunet.evaluate import EvalError, read_csv_list

    f = tmp_path / "set.csv"
    f.write_text("filename,label,method\na.mp4,fake,Deepfakes\nsub/b.png,0,\n")
    items = read_csv_list(f)
    assert [(i.path, i.label, i.method) for i in items] == [
        (tmp_path / "a.mp4", 1, "Deepfakes"), (tmp_path / "sub" / "b.png", 0, "")
    ]
    f.write_text("/abs/x.mp4,1\n")
    assert read_csv_list(f)[0].path.as_posix() == "/abs/x.mp4"
    f.write_text("x.mp4,2\n")
    with pytest.raises(EvalError, match="line 1"):
        read_csv_list(f)


def test_celebdf_list_marks_1_as_real(tmp_path):
    from aunet.evaluate import labeled_files

    (tmp_path / "List_of_testing_videos.txt").write_text("1 YouTube-real/00170.mp4\n0 Celeb-synthesis/id1_id0_0007.mp4\n")
    items = labeled_files(tmp_path)
    assert [(i.path.name, i.label) for i in items] == [("00170.mp4", 0), ("id1_id0_0007.mp4", 1)]


def test_ffpp_test_split_lists_reals_and_both_fakes_of_each_pair(tmp_path):
    from aunet.evaluate import EvalError, labeled_files

    (tmp_path / "original_sequences").mkdir()
    with pytest.raises(EvalError, match="missing split file"):
        labeled_files(tmp_path)
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "test.json").write_text(json.dumps([["953", "974"]]))
    items = labeled_files(tmp_path)
    reals = sorted(i.path.name for i in items if i.label == 0)
    fakes = sorted((i.method, i.path.name) for i in items if i.label == 1)
    assert reals == ["953.mp4", "974.mp4"]
    assert len(fakes) == 8 and ("Deepfakes", "953_974.mp4") in fakes and ("NeuralTextures", "974_953.mp4") in fakes
    assert all("/c23/" in i.path.as_posix() for i in items)


def test_video_protocol_on_a_cache(tmp_path):
    """Frame score = max over the frame's faces, video score = mean over frames; faceless videos counted."""
    from aunet.faces.cache import CacheWriter, FaceCache, VideoFaces, VideoRecord
    from aunet.evaluate import evaluate_cache
    from aunet.spec import CropSpec

    root = build_face_cache(tmp_path / "c", [("real", 2, 0), ("fake", 2, 1, "", "FaceSwap"), ("empty", 0, 1)], size=64)
    # a video with two faces in frame 0: one dark, one bright
    crops = np.stack([np.full((64, 64, 3), v, np.uint8) for v in (20, 200, 100)])
    faces = VideoFaces(crops, np.zeros((3, 68, 2), np.float32), np.array([0, 0, 5]), np.zeros((3, 4), np.float32),
                       np.array([0, 1, 0]), np.ones(3, np.float32))
    CacheWriter(root, 64, CropSpec()).write(VideoRecord("two", "two", 1, "", "FaceSwap", 3, "ok", num_frames=3, frames_without_face=1), faces)
    report = evaluate_cache(FaceCache(root), mean_brightness, 64)
    two = next(v for v in report["videos"] if v["video_id"] == "two")
    assert two["score"] == pytest.approx((200 / 255 + 100 / 255) / 2)
    assert two["frames_scored"] == 2 and two["faces"] == 3
    empty = next(v for v in report["videos"] if v["video_id"] == "empty")
    assert empty["score"] == 0.5 and empty["status"] == "no_face"
    c = report["counts"]
    assert c["videos"] == 4 and c["videos_without_faces"] == 1 and c["videos_scored"] == 3
    # build_face_cache records 1 faceless frame per ok video and 3 for the faceless one
    assert c["frames_without_face"] == 1 + 1 + 1 + 3
    assert report["video"]["n"] == 4 and report["frame"]["n"] == 2 + 2 + 2
    assert set(report["per_method"]) == {"FaceSwap"}


def test_aunet_eval_on_raw_images_and_a_video(torch, tmp_path):
    """A CSV of raw files (images, a video, a faceless image) -> prep -> scores -> JSON, Markdown, ROC, CSV."""
    import cv2
    from typer.testing import CliRunner

    import aunet
    from aunet.model.checkpoint import save_checkpoint
    from aunet.config import ModelConfig
    from aunet.evaluate.cli import app
    from aunet.evaluate import torch_scorer
    from aunet.faces.cache import FaceCache
    from aunet.demo.sample_data import make_sample_images, make_sample_video, no_face_image, write_image

    rng = np.random.default_rng(0)
    reals = make_sample_images(tmp_path / "real", 2, rng)
    fakes = []
    for i, p in enumerate(make_sample_images(tmp_path / "src", 2, rng)):  # a crude forgery: a colour cast
        img = cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
        img = np.clip(img * np.array([1.1, 0.9, 0.9]), 0, 255).astype(np.uint8)
        fakes.append(write_image(tmp_path / "fake" / f"f{i}.png", img))
    video = make_sample_video(tmp_path / "real" / "clip.avi", frames=4, size=(320, 240), rng=rng)
    blank = write_image(tmp_path / "real" / "blank.png", no_face_image())
    rows = [(p, 0) for p in reals] + [(p, 1) for p in fakes] + [(video, 0), (blank, 0)]
    listing = tmp_path / "set.csv"
    listing.write_text("path,label\n" + "".join(f"{p.relative_to(tmp_path)},{y}\n" for p, y in rows))

    torch.manual_seed(0)
    cfg = ModelConfig.named("small").replace(**{k: v for k, v in TEST_MODEL.items() if k != "base"})
    ckpt = tmp_path / "run" / "best.pt"
    model = aunet.build_model(cfg)
    save_checkpoint(ckpt, model, train_config={"protocol": "cross"}, step=7)

    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["--ckpt", str(ckpt), "--data", str(listing), "--out", str(out), "--frames", "3",
                                      "--device", "cpu", "--name", "TINY"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "metrics.json").read_text())
    c = report["counts"]
    assert c["videos"] == 6 and c["videos_without_faces"] == 1 and c["videos_scored"] == 5
    assert c["frames_without_face"] >= 1  # the blank image
    assert report["video"]["n_real"] == 4 and report["video"]["n_fake"] == 2
    assert 0.0 <= report["video"]["auc"] <= 1.0 and 0.0 <= report["frame"]["eer"] <= 1.0
    assert report["model"]["step"] == 7 and report["dataset"]["name"] == "TINY"

    # the video's score is the mean over its frames of the max over faces, recomputed here from the cache
    cache = FaceCache(out / "cache")
    vid = next(r for r in cache.records() if r.video_id.endswith("clip.avi"))
    faces = cache.load(vid.video_id)
    scores = torch_scorer(model.eval(), "cpu")(faces.crops)
    per_frame = {}
    for f, s in zip(faces.frame_indices.tolist(), scores.tolist()):
        per_frame[f] = max(per_frame.get(f, -1.0), s)
    rows = {r["video_id"]: r for r in csv.DictReader((out / "scores.csv").open())}
    assert float(rows[vid.video_id]["score"]) == pytest.approx(np.mean(list(per_frame.values())), abs=1e-5)

    md = (out / "metrics.md").read_text()
    assert "| Method | Input Type | Training Set Real | Training Set Fake | TINY AUC (%) |" in md
    assert "| AUNet (small) | Frame | ✓ | ✗ |" in md
    assert (out / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a second run reuses the cache (no detection again) and gives the same numbers
    again = CliRunner().invoke(app, ["--ckpt", str(ckpt), "--data", str(listing), "--out", str(out), "--frames", "3", "--device", "cpu"])
    assert again.exit_code == 0 and "resuming" in again.output
    assert json.loads((out / "metrics.json").read_text())["video"]["auc"] == report["video"]["auc"]


def test_aunet_eval_bad_inputs(torch, tmp_path):
    from typer.testing import CliRunner

    import aunet
    from aunet.model.checkpoint import save_checkpoint
    from aunet.evaluate.cli import app

    runner = CliRunner()
    ckpt = tmp_path / "best.pt"
    save_checkpoint(ckpt, aunet.build_model("small"))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    listing = tmp_path / "set.csv"
    listing.write_text("missing.mp4,1\n")
    present = tmp_path / "present.csv"  # a set whose file exists: only the checkpoint is wrong
    (tmp_path / "clip.mp4").write_bytes(b"")
    present.write_text("clip.mp4,1\n")
    bad_label = tmp_path / "bad.csv"
    bad_label.write_text("x.mp4,maybe\n")
    cases = [
        (["--ckpt", str(tmp_path / "none.pt"), "--data", str(listing)], 2, "checkpoint not found"),
        (["--ckpt", str(garbage), "--data", str(present)], 2, "cannot read checkpoint"),
        (["--ckpt", str(ckpt), "--data", str(tmp_path / "nowhere")], 2, "does not exist"),
        (["--ckpt", str(ckpt), "--data", str(listing)], 2, "none of its 1 listed files exists"),
        (["--ckpt", str(ckpt), "--data", str(bad_label)], 2, "line 1"),
        (["--ckpt", str(tmp_path / "model.onnx"), "--data", str(listing)], 2, "model not found"),
    ]
    for args, code, needle in cases:
        result = runner.invoke(app, args + ["--out", str(tmp_path / "out"), "--device", "cpu"])
        assert result.exit_code == code, (args, result.output)
        assert needle in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
        assert result.stdout == "" and result.stderr.strip() == assert_error_line(result.stderr, "aunet-eval", needle)


class CreatesAFile:
    """Unpickled, this creates ``path``: what a checkpoint's pickle could do instead (any code at all)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def plant_code(ckpt, out, marker, in_training_state=False):
    """A copy of checkpoint ``ckpt`` at ``out`` that carries a code-executing pickle: in its shared part (what
    eval and export read), or inside its training state (what only a resume reads)."""
    import io

    import torch

    data = torch.load(ckpt, map_location="cpu", weights_only=True)
    if in_training_state:
        buffer = io.BytesIO()
        torch.save({"payload": CreatesAFile(marker)}, buffer)
        data["training_state"] = buffer.getvalue()
    else:
        data["extra"] = CreatesAFile(marker)
    torch.save(data, out)
    return out


def test_aunet_eval_refuses_a_checkpoint_that_would_run_code(torch, tmp_path):
    """A shared checkpoint is read as weights only: a pickle that would run code is refused (one line, exit 2)
    and never runs; code hidden in the training state is never unpickled by eval at all."""
    from typer.testing import CliRunner

    import aunet
    from aunet.evaluate.cli import app
    from aunet.model.checkpoint import save_checkpoint

    root = build_face_cache(tmp_path / "c", [("r1", 1, 0), ("f1", 1, 1)], size=64)
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "good.pt", aunet.build_model(aunet.ModelConfig.named("small").replace(img_size=64, num_encoders=1)))
    marker = tmp_path / "MARKER"
    evil = plant_code(tmp_path / "good.pt", tmp_path / "evil.pt", marker)
    result = CliRunner().invoke(app, ["--ckpt", str(evil), "--data", str(root), "--out", str(tmp_path / "out"),
                                      "--device", "cpu"])
    assert result.exit_code == 2, result.output
    line = assert_error_line(result.stderr, "aunet-eval", f"refusing checkpoint {evil}: loading it would run")
    assert result.stderr.strip() == line and "Traceback" not in result.output
    assert not marker.exists() and not (tmp_path / "out").exists()

    hidden = plant_code(tmp_path / "good.pt", tmp_path / "hidden.pt", marker, in_training_state=True)
    result = CliRunner().invoke(app, ["--ckpt", str(hidden), "--data", str(root), "--out", str(tmp_path / "out2"),
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert not marker.exists()


def test_aunet_eval_refuses_what_is_not_a_model_with_a_hint_before_loading_anything(tmp_path):
    """Wrong kinds of --ckpt / --out are one "aunet-eval: error:" line with exit 2 and what to give instead,
    found before PyTorch or any model loads."""
    import sys

    from typer.testing import CliRunner

    from aunet.evaluate.cli import app

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "best.pt").write_bytes(b"")
    (tmp_path / "clip.mp4").write_bytes(b"")
    listing = tmp_path / "set.csv"
    listing.write_text("clip.mp4,1\n")
    a_file = tmp_path / "report.txt"
    a_file.write_text("")
    cases = [
        (["--ckpt", str(run_dir)], f"give {run_dir / 'best.pt'}"),  # a run folder
        (["--ckpt", str(tmp_path / "faces.png")], "aunet-export onnx --ckpt"),  # neither a checkpoint nor an export
        (["--ckpt", str(run_dir / "best.pt"), "--device", "tensorrt"], "exported models"),
        (["--ckpt", str(run_dir / "best.pt"), "--out", str(a_file)], "is a file"),
    ]
    torch_loaded = "torch" in sys.modules
    for args, needle in cases:
        result = CliRunner().invoke(app, ["--data", str(listing)] + args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stdout == "" and result.stderr.strip() == assert_error_line(result.stderr, "aunet-eval", needle)
    assert ("torch" in sys.modules) == torch_loaded
    assert not (run_dir / "eval").exists()


def test_an_onnx_that_is_not_an_aunet_export_gets_the_export_hint(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper
    from typer.testing import CliRunner

    from aunet.evaluate.cli import app

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "other", [x], [y])
    onnx.save(helper.make_model(graph), str(tmp_path / "detector.onnx"))
    (tmp_path / "clip.mp4").write_bytes(b"")
    (tmp_path / "set.csv").write_text("clip.mp4,1\n")
    result = CliRunner().invoke(app, ["--ckpt", str(tmp_path / "detector.onnx"), "--data", str(tmp_path / "set.csv"),
                                      "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == assert_error_line(result.stderr, "aunet-eval", "aunet-export onnx --ckpt")


@pytest.mark.parametrize("argv,needle", [
    (["--ckpt", "m.pt", "--data", "d", "--device", "gpu"], "'gpu' is not one of 'auto', 'cpu', 'cuda', 'tensorrt'"),
    (["--ckpt", "m.pt", "--data", "d", "--compression", "c99"], "'c99' is not one of 'raw', 'c23', 'c40'"),
    (["--ckpt", "m.pt", "--data", "d", "--batch-size", "0"], "--batch-size"),
    (["--ckpt", "m.pt"], "Missing option '--data'"),
])
def test_aunet_eval_usage_errors_are_one_line_with_exit_2(argv, needle, tmp_path, monkeypatch, capsys):
    from aunet.evaluate.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    assert exc.value.code == 2 and out == ""
    assert err.strip() == assert_error_line(err, "aunet-eval", needle)


def test_evaluate_room_is_torch_free_at_import():
    import subprocess
    import sys

    code = ("import sys, aunet.evaluate, aunet.evaluate.cli, aunet.evaluate.datasets, aunet.evaluate.report\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_undefined_auc_is_reported_not_crashing(tmp_path):
    from aunet.faces.cache import FaceCache
    from aunet.evaluate import evaluate_cache, markdown_report

    root = build_face_cache(tmp_path / "c", [("r1", 1, 0), ("r2", 1, 0)], size=64)
    report = evaluate_cache(FaceCache(root), mean_brightness, 64)
    assert math.isnan(report["video"]["auc"])
    assert "n/a" in markdown_report(report, "REALS", "m", "cross")


def test_onnx_model_is_evaluated_through_the_runtime_on_the_same_data(torch, tmp_path):
    """--ckpt MODEL.onnx scores through aunet.runtime's ONNX Runtime backend: same cache, same protocol, and
    (FP32 export) the same per-video scores as the PyTorch checkpoint."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from typer.testing import CliRunner

    import aunet
    from aunet.model.checkpoint import save_checkpoint
    from aunet.config import ModelConfig
    from aunet.evaluate.cli import app
    from aunet.export.onnx_export import export_onnx

    root = build_face_cache(tmp_path / "c", [("r1", 2, 0), ("f1", 2, 1), ("r2", 1, 0)], size=64)
    torch.manual_seed(0)
    model = aunet.build_model(ModelConfig.named("small").replace(img_size=64, num_encoders=1)).eval()
    save_checkpoint(tmp_path / "m.pt", model)
    export_onnx(model, tmp_path / "m.onnx", simplify=False)
    runner = CliRunner()
    scores = {}
    for name in ("m.pt", "m.onnx"):
        out = tmp_path / f"eval_{name}"
        result = runner.invoke(app, ["--ckpt", str(tmp_path / name), "--data", str(root), "--out", str(out), "--device", "cpu"])
        assert result.exit_code == 0, result.output
        scores[name] = {r["video_id"]: float(r["score"]) for r in csv.DictReader((out / "scores.csv").open())}
    assert scores["m.pt"].keys() == scores["m.onnx"].keys() == {"r1", "f1", "r2"}
    for vid, s in scores["m.pt"].items():
        assert scores["m.onnx"][vid] == pytest.approx(s, abs=1e-4)
    assert "onnxruntime" in json.loads((tmp_path / "eval_m.onnx" / "metrics.json").read_text())["model"]["backend"].lower()
