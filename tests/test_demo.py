"""The demo's own pieces: the forged sample video, the per-segment verdicts, and how it stops on a failed stage."""
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest


def read_frames(path):
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f[..., ::-1])
    cap.release()
    return frames


def test_forge_face_changes_only_the_face(astronaut):
    from aunet.demo.demo import forge_face
    from aunet.faces import DlibHogDetector, LandmarkPredictor

    detector, predictor = DlibHogDetector(), LandmarkPredictor()
    forged = forge_face(astronaut, np.random.default_rng(0), detector, predictor)
    assert forged is not None and forged.shape == astronaut.shape
    changed = np.abs(forged.astype(int) - astronaut.astype(int)).max(axis=2) > 0
    x0, y0, x1, y1 = detector.detect(astronaut)[0].box
    pad = 0.3 * (x1 - x0)
    outside = np.ones_like(changed)
    outside[int(y0 - pad):int(y1 + pad), int(x0 - pad):int(x1 + pad)] = False
    assert changed.sum() > 500  # the face really was tampered
    assert not changed[outside].any()  # and nothing else
    assert forge_face(np.zeros((200, 200, 3), np.uint8), np.random.default_rng(0), detector, predictor) is None


def test_forged_video_segments_and_verdicts(tmp_path):
    from aunet.demo.demo import make_forged_video, segment_verdicts

    path = tmp_path / "sample.mp4"
    plan = make_forged_video(path, [("real", 3), ("fake", 3)], size=(320, 240), seed=1)
    assert [(p["kind"], p["first_frame"], p["last_frame"]) for p in plan] == [("real", 0, 2), ("fake", 3, 5)]
    frames = read_frames(path)
    assert len(frames) == 6 and frames[0].shape == (240, 320, 3)
    result = {"frames": [{"index": i, "score": s} for i, s in enumerate([0.1, 0.2, None, 0.9, 0.4, 0.8])]}
    rows = segment_verdicts(result, plan, 0.5)
    assert rows[0]["score"] == pytest.approx(0.15) and rows[0]["verdict"] == "real" and rows[0]["frames_scored"] == 2
    assert rows[1]["score"] == pytest.approx(0.7) and rows[1]["verdict"] == "fake" and rows[1]["correct"]
    empty = segment_verdicts({"frames": []}, plan, 0.5)
    assert [r["verdict"] for r in empty] == ["no_face", "no_face"]


def test_labeled_set_for_eval(tmp_path):
    """Held-out real photos and forged ones, listed in a CSV that aunet-eval reads."""
    from aunet.demo.demo import make_labeled_set
    from aunet.evaluate import read_csv_list

    csv = make_labeled_set(tmp_path / "set", 2, seed=0)
    items = read_csv_list(csv)
    assert sorted(i.label for i in items) == [0, 0, 1, 1]
    assert all(i.path.is_file() and i.path.parent.name == ("fake" if i.label else "real") for i in items)
    real, fake = (cv2.imread(str(next(i.path for i in items if i.label == k))) for k in (0, 1))
    assert real is not None and fake is not None and not np.array_equal(real, fake)


def test_frames_picture_shows_a_typical_real_and_forged_frame(tmp_path):
    from aunet.demo.demo import StageFailed, make_forged_video, save_frames_picture

    video = tmp_path / "v.mp4"
    plan = make_forged_video(video, [("real", 3), ("fake", 3), ("real", 2)], size=(320, 240), seed=2)
    # scored frames: real 0 (0.1), 2 (0.3), 6 (0.2) -> median 0.2 = frame 6; fake 4 (0.9) only -> frame 4
    result = {"frames": [{"index": i, "score": s} for i, s in
                         [(0, 0.1), (1, None), (2, 0.3), (3, None), (4, 0.9), (5, None), (6, 0.2), (7, None)]]}
    picture = save_frames_picture(video, plan, result, tmp_path / "frames.png")
    img = cv2.imread(str(picture))[..., ::-1].astype(int)
    assert img.shape == (240, 640, 3)
    frames = [f.astype(int) for f in read_frames(video)]
    assert np.abs(img[:, :320] - frames[6]).mean() < 1 < np.abs(img[:, :320] - frames[0]).mean()
    assert np.abs(img[:, 320:] - frames[4]).mean() < 1
    # no face scored anywhere: the middle frame of the first segment of each kind
    picture = save_frames_picture(video, plan, {"frames": []}, tmp_path / "mid.png")
    img = cv2.imread(str(picture))[..., ::-1].astype(int)
    assert np.abs(img[:, :320] - frames[1]).mean() < 1 and np.abs(img[:, 320:] - frames[4]).mean() < 1
    with pytest.raises(StageFailed):
        save_frames_picture(tmp_path / "missing.mp4", plan, result, tmp_path / "none.png")


# --- a failed stage stops the demo: one line `python -m aunet.demo: error: ...` on stderr, exit 1 ----------------


def run_demo(capsys, *args) -> tuple[int, str, str]:
    from aunet.demo.demo import main

    with pytest.raises(SystemExit) as exited:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return exited.value.code, captured.out, captured.err


def assert_one_error_line(stderr: str, expected: str) -> None:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("python -m aunet.demo: error: ") and expected in lines[0], lines[0]


@pytest.fixture()
def no_sample_data(monkeypatch):
    """The sample-faces stage does nothing (the stages under test come after it)."""
    import aunet.demo.sample_data as sample_data

    monkeypatch.setattr(sample_data, "make_sample_images", lambda *a, **k: [])
    monkeypatch.setattr(sample_data, "make_sample_video", lambda *a, **k: None)


def test_a_failing_command_stops_the_demo_with_exit_1(capsys, monkeypatch, tmp_path, no_sample_data):
    import aunet.demo.demo as demo

    monkeypatch.setattr(demo, "tool", lambda name: shutil.which("false"))  # every CLI exits 1
    code, out, err = run_demo(capsys, "--out", tmp_path / "demo")
    assert code == 1
    assert_one_error_line(err, "stopped: aunet-prep failed with exit code 1")
    assert "failed (exit 1)" in out  # the summary table still shows where it stopped


def test_a_failing_in_process_stage_stops_the_demo_with_exit_1(capsys, monkeypatch, tmp_path):
    import aunet.demo.sample_data as sample_data

    def broken(*args, **kwargs):
        raise ValueError("no room\nleft")

    monkeypatch.setattr(sample_data, "make_sample_images", broken)
    code, out, err = run_demo(capsys, "--out", tmp_path / "demo")
    assert code == 1
    assert_one_error_line(err, "stopped: sample faces (scikit-image's astronaut, varied) failed: ValueError: no room")
    assert "failed" in out


def test_an_unusable_output_folder_is_a_bad_argument(capsys, tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    code, _, err = run_demo(capsys, "--out", not_a_folder)
    assert code == 2
    assert_one_error_line(err, f"cannot make the output folder {not_a_folder}")


def test_usage_errors_through_python_m(tmp_path):
    """`python -m aunet.demo` is the entry point (its __main__ calls main()): usage errors are one line, exit 2."""
    r = subprocess.run([sys.executable, "-m", "aunet.demo", "--images", "2", "--out", tmp_path / "demo"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert_one_error_line(r.stderr, "'--images'")
    assert not (tmp_path / "demo").exists()  # refused before anything ran


# --- the INT8 stages: quantized to the accuracy target; a missed target fails the demo ---------------------------


def _quantize_report(path, passed, target):
    import json

    path.write_text(json.dumps({
        "target": target, "passed": passed, "method": "entropy", "fp32_nodes": ["/a/Conv"] * (0 if passed else 16),
        "quantizable_nodes": 77, "accuracy": "agreement=0.98,auc_drop=0.5",
        "judgement": {"num_faces": 90, "decision_agreement": 0.99 if passed else 0.875, "auc_reference": 0.97,
                      "auc_candidate": 0.968 if passed else 0.935, "auc_drop_points": 0.2 if passed else 3.5,
                      "interval": {"decision_agreement": [0.95, 1.0], "auc_drop_points": [-0.3, 0.8]}},
        "speed": {"fp32_faces_per_s": [30.0, 1.0], "int8_faces_per_s": [45.0, 2.0], "speedup": [1.5, 0.1],
                  "cpu": {"flags": ["avx2", "avx512f", "avx512_vnni"]}},
    }))


@pytest.fixture()
def staged_demo(monkeypatch, no_sample_data):
    """The whole demo with every CLI faked (exit 0, except what ``codes`` says for aunet-calib quantize per
    target) and the in-process stages that need real outputs stubbed: only the flow is under test."""
    import subprocess as sp

    import aunet.demo.demo as demo

    codes = {"cpu": 0, "tensorrt": 0}
    calls = []

    def fake_run(argv, **kwargs):
        calls.append(argv)
        code = 0
        if "quantize" in argv:
            target = argv[argv.index("--target") + 1]
            code = codes[target]
            from pathlib import Path

            _quantize_report(Path(argv[argv.index("--report") + 1]), code == 0, target)
        return sp.CompletedProcess(argv, code, stdout="", stderr="aunet-calib: error: INT8 misses the target" if code else "")

    monkeypatch.setattr(demo.subprocess, "run", fake_run)
    monkeypatch.setattr(demo, "tool", lambda name: name)
    monkeypatch.setattr(demo, "make_labeled_set", lambda root, pairs, seed: root / "labels.csv")
    monkeypatch.setattr(demo, "make_forged_video", lambda *a, **k: [{"kind": "real", "first_frame": 0, "last_frame": 0}])
    monkeypatch.setattr(demo, "save_frames_picture", lambda *a, **k: None)
    monkeypatch.setattr(demo, "_video_result", lambda path: {"frames": [], "threshold": 0.5, "verdict": "real", "score": 0.1})
    monkeypatch.setattr(demo, "print_verdicts", lambda *a, **k: None)
    monkeypatch.setattr(demo, "tensorrt_available", lambda: False)
    return codes, calls


def test_int8_stages_quantize_both_targets_to_the_target(capsys, tmp_path, staged_demo):
    codes, calls = staged_demo
    code, out, err = run_demo(capsys, "--out", tmp_path / "demo")
    assert code == 0, err
    quantize = [c for c in calls if "quantize" in c]
    assert [c[c.index("--target") + 1] for c in quantize] == ["cpu", "tensorrt"]
    assert all("--data" in c and "--method" not in c for c in quantize)  # the target decides, not a recipe
    # the summary: FP32 vs INT8 speed and accuracy side by side, with the CPU's flags
    assert "FP32 vs INT8 on held-out faces" in out and "avx512_vnni" in out
    assert "99.0 %" in out and "30.0 ± 1.0" in out and "45.0 ± 2.0" in out and "1.50 ± 0.10×" in out


@pytest.mark.parametrize("failing", ["cpu", "tensorrt"])
def test_a_missed_int8_target_fails_the_demo(capsys, tmp_path, staged_demo, failing):
    """An INT8 model that misses its accuracy target is a failed stage: the other stages still run, the summary
    shows it, and the demo exits 1 with one error line."""
    codes, calls = staged_demo
    codes[failing] = 1
    code, out, err = run_demo(capsys, "--out", tmp_path / "demo")
    assert code == 1
    assert_one_error_line(err, f"1 stage(s) failed: aunet-calib quantize --target {failing}")
    assert any("aunet-infer" in str(c[0]) for c in calls)  # the demo went on after the failed stage
    assert "failed (exit 1)" in out and "missed" in out and "87.5 %" in out
