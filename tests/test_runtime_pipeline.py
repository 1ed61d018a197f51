"""The runtime end to end on an ONNX of the small model: torch blocked, parity with PyTorch, batching across
frames, sampling, no-face videos, annotated video, and `aunet-infer`'s bad-input handling and exit codes."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from aunet.demo.sample_data import make_sample_video, no_face_image

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def exported(torch, tmp_path_factory):
    """(small model, its ONNX) — export needs torch; the runtime never does."""
    from aunet.export.onnx_export import export_onnx

    import aunet

    torch.manual_seed(0)
    model = aunet.build_model("small").eval()
    path = tmp_path_factory.getbasetemp() / "runtime-small.onnx"  # shared with test_bench (same seed, same weights)
    if not path.exists():
        export_onnx(model, path)
    return model, path


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return make_sample_video(tmp_path_factory.mktemp("video") / "face.mp4", frames=10, fps=10.0, size=(480, 360))


@pytest.fixture(scope="module")
def no_face_video(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "cup.avi"
    img = cv2.resize(no_face_image(), (320, 240))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (320, 240))
    for _ in range(3):
        writer.write(np.ascontiguousarray(img[..., ::-1]))
    writer.release()
    return path


@pytest.fixture(scope="module")
def detector(exported):
    from aunet.runtime import Detector

    with Detector(exported[1], device="cpu", batch_size=4) as d:
        yield d


def test_runtime_runs_with_torch_blocked(exported, video, tmp_path):
    out = tmp_path / "r.json"
    script = textwrap.dedent(f"""
        import sys

        class BlockTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is blocked in this test")

        sys.meta_path.insert(0, BlockTorch())
        from aunet.runtime import Detector
        from aunet.runtime.sources import Sampling
        with Detector({str(exported[1])!r}, device="cpu") as d:
            r = d.predict_video({str(video)!r}, Sampling(frames=3))
        assert r.frames_with_face == 3, r.to_dict(grids=False)
        from aunet.runtime.cli import main
        sys.argv = ["aunet-infer", {str(video)!r}, "--engine", {str(exported[1])!r}, "--frames", "2",
                    "--out", {str(out)!r}, "--quiet"]
        try:
            main()
        except SystemExit as exc:
            assert exc.code == 0, exc.code
        assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
        print("OK", r.verdict)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "OK" in proc.stdout
    assert json.loads(out.read_text())["frames_analysed"] == 2


def test_predict_faces_matches_pytorch(torch, exported, detector, astronaut):
    from aunet.faces.crop import crop_face
    from aunet.faces import DlibHogDetector

    model = exported[0]
    spec = detector.spec
    box = DlibHogDetector().detect(astronaut)[0].box
    crop, _ = crop_face(astronaut, box, spec.input_size, spec.crop)
    rng = np.random.default_rng(0)
    crops = np.stack([crop, crop[:, ::-1], rng.integers(0, 256, crop.shape, dtype=np.uint8)])
    pred = detector.predict_faces(crops)
    with torch.no_grad():
        ref = model(torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255.0)
    np.testing.assert_allclose(pred.scores, ref.score.numpy(), atol=1e-4)
    ref_maps = torch.softmax(ref.patch_logits, -1)[..., 1].reshape(3, *spec.patch_grid).numpy()
    np.testing.assert_allclose(pred.region_maps, ref_maps, atol=1e-4)


def test_video_results_equal_frame_by_frame_results(detector, video):
    """Batching faces across frames (batch 4 over 10 frames) must not change any face's result."""
    from aunet.runtime.sources import VideoSource

    result = detector.predict_video(video)
    frames = list(VideoSource(video).frames())
    assert [f.index for f in result.frames] == [i for i, _, _ in frames]
    for fr, (_, _, rgb) in zip(result.frames, frames):
        single = detector.predict_frame(rgb)
        assert len(fr.faces) == len(single.faces) == 1
        assert fr.faces[0].score == pytest.approx(single.faces[0].score, abs=1e-5)
        np.testing.assert_allclose(fr.faces[0].box, single.faces[0].box)
        np.testing.assert_allclose(fr.faces[0].region_map, single.faces[0].region_map, atol=2e-3)  # float16
    assert result.score == pytest.approx(np.mean([f.score for f in result.frames]))
    d = result.to_dict()
    assert d["verdict"] == ("fake" if result.score >= detector.spec.threshold else "real")
    assert d["backend"].startswith("onnxruntime") and d["model_spec"]["input_size"] == [112, 112]
    h, w = detector.spec.patch_grid
    assert np.asarray(d["frames"][0]["faces"][0]["region_grid"]).shape == (h, w)
    assert set(d["timings"]) >= {"decode_s", "detect_s", "infer_s", "total_s", "frames_per_s"}


def test_detector_errors_propagate_without_hanging(exported, video):
    from aunet.runtime import Detector

    class Flaky:
        name = "flaky"
        calls = 0

        def detect(self, rgb):
            Flaky.calls += 1
            if Flaky.calls == 3:
                raise RuntimeError("detector crashed")
            return []

    before = threading.active_count()
    with Detector(exported[1], device="cpu", face_detector=Flaky()) as d:
        with pytest.raises(RuntimeError, match="detector crashed"):
            d.predict_video(video)
    assert threading.active_count() == before


def run_cli(*args):
    from aunet.runtime.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def error_line(stderr):
    """The one `aunet-infer: error:` line a failure prints (and nothing else on stderr, with --quiet)."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aunet-infer: error: "), stderr
    return lines[0]


def test_cli_writes_json_and_annotated_video(exported, video, tmp_path):
    out, annotated = tmp_path / "r.json", tmp_path / "annotated.mp4"
    res = run_cli(video, "--engine", exported[1], "--every", "3", "--out", out, "--save-video", annotated,
                  "--threshold", "0")
    assert res.exit_code == 0, res.output
    r = json.loads(out.read_text())
    assert r["verdict"] == "fake" and r["threshold"] == 0  # threshold 0: every face is "fake"
    assert [f["index"] for f in r["frames"]] == [0, 3, 6, 9]
    cap = cv2.VideoCapture(str(annotated))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 4 and int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == 480
    cap.release()
    res = run_cli(video, "--engine", exported[1], "--frames", "2", "--threshold", "1", "--no-grids", "--quiet")
    assert res.exit_code == 0
    r = json.loads(res.stdout)
    assert r["verdict"] == "real" and "region_grid" not in r["frames"][0]["faces"][0]


def test_cli_no_face_verdict(exported, no_face_video):
    res = run_cli(no_face_video, "--engine", exported[1], "--quiet")
    assert res.exit_code == 0, res.output
    r = json.loads(res.stdout)
    assert r["verdict"] == "no_face" and r["score"] is None and r["frames_analysed"] == 3


def test_cli_bad_inputs(exported, video, tmp_path):
    onnx = exported[1]
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00not a video" * 500)
    empty = tmp_path / "empty.avi"
    cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (64, 64)).release()
    for bad in (corrupt, empty):
        res = run_cli(bad, "--engine", onnx, "--quiet")
        assert res.exit_code == 2, (bad, res.output)
        assert "Traceback" not in res.output and bad.name in error_line(res.stderr)
        assert json.loads(res.stdout)["verdict"] == "error"
    # several inputs: the bad one is recorded, the good one analysed, exit 2
    res = run_cli(video, tmp_path / "missing.mp4", "--engine", onnx, "--frames", "1", "--quiet")
    assert res.exit_code == 2
    records = json.loads(res.stdout)
    assert [r["verdict"] != "error" for r in records] == [True, False]
    assert "no such file" in records[1]["error"]
    assert "no such file" in error_line(res.stderr)
    # engine problems: missing, not an ONNX, an ONNX without the spec
    not_onnx = tmp_path / "model.onnx"
    not_onnx.write_bytes(b"garbage")
    for engine in (tmp_path / "none.onnx", not_onnx, tmp_path / "model.bin"):
        res = run_cli(video, "--engine", engine, "--quiet")
        assert res.exit_code == 2 and "Traceback" not in res.output
        assert str(engine) in error_line(res.stderr) and res.stdout == ""
    res = run_cli(video, "--engine", onnx, "--frames", "2", "--every", "2")
    assert res.exit_code == 2 and res.stdout == ""
    assert "--frames and --every are mutually exclusive" in error_line(res.stderr)


def test_cli_refuses_missing_inputs_and_checkpoints_before_loading_the_engine(tmp_path):
    """No input that exists, or a training checkpoint as --engine: one line, exit 2, no JSON. The engine is a
    garbage file here: had it been loaded first, its error would have been the one reported."""
    garbage = tmp_path / "model.onnx"
    garbage.write_bytes(b"garbage")
    res = run_cli(tmp_path / "missing.mp4", "--engine", garbage, "--quiet")
    assert res.exit_code == 2 and res.stdout == ""
    assert error_line(res.stderr) == f"aunet-infer: error: no such file: {tmp_path / 'missing.mp4'}"
    res = run_cli(tmp_path / "a.mp4", tmp_path / "b.mp4", "--engine", garbage, "--quiet")
    assert res.exit_code == 2 and "no such file" in error_line(res.stderr) and "b.mp4" in res.stderr

    ckpt = tmp_path / "best.pt"  # need not exist: refused by its kind
    res = run_cli(tmp_path / "missing.mp4", "--engine", ckpt, "--quiet")
    assert res.exit_code == 2 and res.stdout == ""
    assert error_line(res.stderr) == (f"aunet-infer: error: {ckpt} is a PyTorch checkpoint: export it first with "
                                      f"aunet-export onnx --ckpt {ckpt} --out model.onnx")


def test_cli_usage_errors_through_the_entry_point(tmp_path, capsys):
    """Values outside a fixed set and exclusive options are refused at parse time: one line, exit 2."""
    from aunet.runtime.cli import main

    garbage = tmp_path / "model.onnx"
    garbage.write_bytes(b"garbage")
    for argv, text in (([str(tmp_path / "v.mp4"), "--engine", str(garbage), "--device", "gpu"],
                        "'gpu' is not one of 'auto', 'cpu', 'cuda', 'tensorrt'"),
                       ([str(tmp_path / "v.mp4"), "--engine", str(garbage), "--frames", "5", "--every", "2"],
                        "--frames and --every are mutually exclusive: give one")):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        out, err = capsys.readouterr()
        assert exc.value.code == 2 and out == ""
        assert text in error_line(err)


def test_cli_engine_for_missing_hardware_exits_3(exported, video, tmp_path):
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"serialized engine")
    from aunet.backends import read_spec

    sidecar = {"format": "aunet-plan", "spec": read_spec(exported[1]).to_dict(), "tensorrt": "0.0",
               "gpu": {"name": "Nonexistent GPU", "compute_capability": "1.0"}}
    (tmp_path / "model.plan.json").write_text(json.dumps(sidecar))
    res = run_cli(video, "--engine", plan, "--quiet")
    assert res.exit_code == 3, res.output  # no TensorRT / no GPU / built for another GPU: all "hardware"
    assert "Traceback" not in res.output and res.stdout == ""
    error_line(res.stderr)


def test_stop_event_ends_a_video_early_with_the_frames_so_far(detector, video):
    stop = threading.Event()
    before = threading.active_count()

    def on_frame(frame, _rgb):
        if frame.index >= 1:
            stop.set()  # as the CLI's Ctrl-C handler does

    result = detector.predict_video(video, on_frame=on_frame, stop=stop)
    assert result.info["stopped"] is True
    assert 2 <= len(result.frames) < 10 and [f.index for f in result.frames] == list(range(len(result.frames)))
    assert threading.active_count() == before


def test_backend_failure_is_one_line_and_exit_4(exported, video, monkeypatch):
    from aunet.backends import OnnxRuntimeBackend

    calls = []
    real_infer = OnnxRuntimeBackend._infer

    def out_of_memory(self, images):
        calls.append(len(images))
        if len(calls) == 1:  # the load-time check passes; the run then fails
            return real_infer(self, images)
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\n(long backend dump)")

    monkeypatch.setattr(OnnxRuntimeBackend, "_infer", out_of_memory)
    res = run_cli(video, "--engine", exported[1], "--frames", "2", "--quiet")
    assert res.exit_code == 4, res.output
    assert "inference failed on" in res.stderr and "out of memory" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.output
    error_line(res.stderr)
    assert json.loads(res.stdout)["verdict"] == "error"


def test_cli_spec_mismatch_exits_2(exported, video, tmp_path):
    """An ONNX whose spec describes another model (the paper's 224 input on the small 112 graph)."""
    import onnx

    from aunet.config import ModelConfig
    from aunet.backends import read_spec
    from aunet.spec import METADATA_KEY

    wrong = read_spec(exported[1]).to_dict()
    wrong["model"] = ModelConfig.named("paper").to_dict()
    proto = onnx.load(str(exported[1]))
    next(p for p in proto.metadata_props if p.key == METADATA_KEY).value = json.dumps(wrong)
    path = tmp_path / "mismatch.onnx"
    onnx.save(proto, str(path))
    res = run_cli(video, "--engine", path, "--quiet")
    assert res.exit_code == 2, res.output
    assert "does not run the input its spec describes" in res.stderr and "Traceback" not in res.output
    error_line(res.stderr)
