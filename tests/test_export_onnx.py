"""`aunet-export onnx`: the ONNX matches PyTorch on both heads at any batch, carries its spec, and bad input
fails with one line, a documented exit code and no artifact."""
import json

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

FP32_TOL = 1e-4


def run_cli(*args):
    from aunet.export.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def error_line(result):
    """The one `aunet-export: error:` line of a failed command, on stderr."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aunet-export: error: "), result.output
    return lines[0]


def ort_run(path_or_session, images):
    session = path_or_session
    if not isinstance(session, ort.InferenceSession):
        session = ort.InferenceSession(str(path_or_session), providers=["CPUExecutionProvider"])
    return dict(zip(["cls_logits", "patch_logits", "score"], session.run(None, {"image": images})))


@pytest.fixture(scope="module")
def exported(tmp_path_factory, torch):
    """A small-config checkpoint exported through the CLI (ONNX, reference bundle, verification report)."""
    import aunet
    from aunet.model.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    model = aunet.build_model("small").eval()
    save_checkpoint(root / "best.pt", model, step=1)
    result = run_cli("onnx", "--ckpt", root / "best.pt", "--out", root / "model.onnx", "--ref-samples", 4)
    assert result.exit_code == 0, result.output
    return {"root": root, "model": model, "onnx": root / "model.onnx", "ref": root / "model.ref.npz",
            "report": root / "model.onnx.verify.json"}


def test_onnx_matches_pytorch_on_both_heads_at_several_batches(exported, torch):
    from aunet.export.reference import synthetic_faces

    images = synthetic_faces(5, 112, seed=7)
    with torch.no_grad():
        ref = exported["model"](torch.from_numpy(images))
    session = ort.InferenceSession(str(exported["onnx"]), providers=["CPUExecutionProvider"])
    for b in (1, 2, 5):  # the batch dimension is dynamic: one graph for every batch size
        got = ort_run(session, images[:b])
        assert got["cls_logits"].shape == (b, 2) and got["patch_logits"].shape == (b, 49, 2) and got["score"].shape == (b,)
        for name in ("cls_logits", "patch_logits", "score"):
            np.testing.assert_allclose(got[name], getattr(ref, name)[:b].numpy(), atol=FP32_TOL, rtol=0)


def test_graph_is_inference_only_with_symbolic_batch(exported):
    import onnx

    model = onnx.load(str(exported["onnx"]))
    assert [i.name for i in model.graph.input] == ["image"]
    assert [o.name for o in model.graph.output] == ["cls_logits", "patch_logits", "score"]
    batch_dims = {vi.type.tensor_type.shape.dim[0].dim_param for vi in [*model.graph.input, *model.graph.output]}
    assert batch_dims == {"batch"}
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {"Dropout", "BatchNormalization"}  # eval mode, BN folded into the convolutions
    assert {"LayerNormalization", "Softmax"} <= ops  # opset 17 keeps them whole (FP16 keeps them in float32)
    assert any("/importance/" in n.name for n in model.graph.node)  # the scope AutoCast keeps in float32
    onnx.checker.check_model(model, full_check=True)


def test_spec_round_trips_through_metadata(exported, torch):
    from aunet.model.checkpoint import load_checkpoint
    from aunet.artifacts import file_sha256
    from aunet.backends import read_spec

    spec = read_spec(exported["onnx"])
    cfg = exported["model"].cfg
    assert spec.config == cfg and spec.input_size == 112 and spec.patch_grid == (7, 7)
    assert spec.output_names == ("cls_logits", "patch_logits", "score") and spec.class_names == ("real", "fake")
    assert spec.value_range == (0.0, 1.0) and spec.input_layout == "NCHW" and spec.color == "RGB"
    prov = spec.provenance
    assert prov["precision"] == "fp32" and prov["opset"] == 17
    assert prov["checkpoint_sha256"] == file_sha256(exported["root"] / "best.pt")
    assert prov["versions"]["torch"] == torch.__version__ and "onnxruntime" in prov["versions"]
    assert prov["backbone"] == {"source": "random"}  # the checkpoint's record of its backbone's init weights
    assert load_checkpoint(exported["root"] / "best.pt")["config"] == spec.model


def test_reference_bundle_holds_pytorch_outputs_of_every_head(exported, torch):
    from aunet.export.reference import load_reference

    ref = load_reference(exported["ref"])
    assert ref["image"].shape == (4, 3, 112, 112) and ref["image"].dtype == np.float32
    assert 0.0 <= ref["image"].min() and ref["image"].max() <= 1.0 and ref["image"].std() > 0.05
    with torch.no_grad():
        out = exported["model"](torch.from_numpy(ref["image"]))
    for name in ("cls_logits", "patch_logits", "score"):
        np.testing.assert_allclose(ref[name], getattr(out, name).numpy(), atol=1e-6, rtol=0)


def test_default_verification_report(exported):
    report = json.loads(exported["report"].read_text())
    assert report["passed"] is True and report["precision"] == "fp32"
    assert set(report["batches"]) == {"1", "4"}  # batch 1 and the larger batch
    checked = {(c["batch"], c["check"]) for c in report["checks"]}
    assert {("1", "cls_logits max_abs"), ("4", "patch_logits max_abs")} <= checked
    assert all(c["passed"] for c in report["checks"])
    m = report["batches"]["4"]
    assert m["cls_logits"]["max_abs"] <= FP32_TOL and m["cls_logits"]["cosine"] > 0.9999 and m["top1"]["agreement"] == 1


def test_verify_fails_on_a_drifted_reference(exported, tmp_path):
    """A backend 1e-3 off the reference fails the FP32 threshold: exit 1 and a report saying so."""
    with np.load(exported["ref"]) as z:
        data = {k: z[k] for k in z.files}
    data["cls_logits"] = data["cls_logits"] + 1e-3
    drifted = tmp_path / "drifted.ref.npz"
    np.savez(drifted, **data)
    report = tmp_path / "r.json"
    result = run_cli("verify", "--model", exported["onnx"], "--ref", drifted, "--report", report)
    assert result.exit_code == 1, result.output
    assert error_line(result) == "aunet-export: error: model.onnx failed its verification against drifted.ref.npz"
    checks = json.loads(report.read_text())["checks"]
    assert [c["passed"] for c in checks if c["check"] == "cls_logits max_abs"] == [False, False]
    assert all(c["passed"] for c in checks if c["check"] == "patch_logits max_abs")


def test_verify_refuses_an_onnx_of_another_model(exported, tmp_path):
    with np.load(exported["ref"]) as z:
        data = {k: z[k] for k in z.files}
    spec = json.loads(str(data["spec"]))
    spec["model"]["num_aus"] = 12  # a bundle of another model
    data["spec"] = np.array(json.dumps(spec))
    other = tmp_path / "other.ref.npz"
    np.savez(other, **data)
    result = run_cli("verify", "--model", exported["onnx"], "--ref", other)
    assert result.exit_code == 2
    assert "spec mismatch" in result.output and "num_aus" in result.output and "Traceback" not in result.output
    assert "spec mismatch" in error_line(result)


def test_bad_checkpoints_and_outputs_exit_2_without_artifacts(exported, tmp_path):
    out = tmp_path / "m.onnx"
    missing = run_cli("onnx", "--ckpt", tmp_path / "nope.pt", "--out", out)
    assert missing.exit_code == 2 and "checkpoint not found" in missing.output

    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint" * 10)
    bad = run_cli("onnx", "--ckpt", corrupt, "--out", out)
    assert bad.exit_code == 2 and "cannot read checkpoint" in bad.output

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((exported["root"] / "best.pt").read_bytes()[:100_000])
    assert run_cli("onnx", "--ckpt", truncated, "--out", out).exit_code == 2

    other_config = run_cli("onnx", "--ckpt", exported["root"] / "best.pt", "--out", out, "--config", "paper")
    assert other_config.exit_code == 2 and "differs from 'paper'" in other_config.output

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    unwritable = run_cli("onnx", "--ckpt", exported["root"] / "best.pt", "--out", blocker / "m.onnx")
    assert unwritable.exit_code == 2 and "cannot write" in unwritable.output

    for r in (missing, bad, other_config, unwritable):
        assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1
        error_line(r)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "corrupt.pt", "truncated.pt"]  # nothing half-written


def test_a_checkpoint_that_would_run_code_is_refused_unexecuted(exported, tmp_path):
    """aunet-export onnx on a downloaded checkpoint reads it as weights only: planted code is refused with one
    line and exit 2, never run, and nothing is written."""
    from test_eval import plant_code

    marker = tmp_path / "MARKER"
    evil = plant_code(exported["root"] / "best.pt", tmp_path / "evil.pt", marker)
    r = run_cli("onnx", "--ckpt", evil, "--out", tmp_path / "m.onnx")
    assert r.exit_code == 2, r.output
    assert error_line(r).startswith(f"aunet-export: error: refusing checkpoint {evil}: loading it would run ")
    assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.pt"]


def test_the_wrong_kind_of_model_file_gets_a_hint(exported, tmp_path):
    """An exported model where the checkpoint belongs, a checkpoint where an exported model belongs: exit 2 and
    one line naming the command that makes the right file."""
    r = run_cli("onnx", "--ckpt", exported["onnx"], "--out", tmp_path / "m.onnx")
    assert r.exit_code == 2
    assert "is an exported model, not a training checkpoint" in error_line(r)
    ckpt = exported["root"] / "best.pt"
    hint = f"{ckpt} is a PyTorch checkpoint: export it first with aunet-export onnx --ckpt {ckpt} --out model.onnx"
    for args in (("verify", "--model", ckpt), ("trt", "--onnx", ckpt, "--fp16"),
                 ("triton", "--model", ckpt, "--out", tmp_path / "repo")):
        r = run_cli(*args)
        assert r.exit_code == 2, (args, r.output)
        assert error_line(r) == f"aunet-export: error: {hint}"
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_usage_errors_through_the_entry_point(exported, capsys):
    """Values outside a fixed set are refused at parse time: one line on stderr, exit 2."""
    from aunet.export.cli import main

    for argv, text in ((["verify", "--model", str(exported["onnx"]), "--device", "gpu"], "'gpu' is not one of"),
                       (["verify", "--model", str(exported["onnx"]), "--precision", "int4"], "'int4' is not one of"),
                       (["verify", "--model", str(exported["onnx"]), "--optimization", "max"], "'max' is not one of")):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        out, err = capsys.readouterr()
        assert exc.value.code == 2 and out == ""
        assert err.count("\n") == 1 and err.startswith("aunet-export: error: ") and text in err, err


def test_export_onnx_api_is_atomic_and_keeps_the_model_mode(small_model, tmp_path, monkeypatch, torch):
    """A failing exporter leaves no file behind and the model's train flag as it was; a graph that fails the
    checker is never written (temporary file, then rename)."""
    from onnx import helper

    from aunet.artifacts import ExportError, check_and_save_onnx
    from aunet.export.onnx_export import export_onnx

    def broken_export(*args, **kwargs):
        raise RuntimeError("forced exporter failure")

    monkeypatch.setattr(torch.onnx, "export", broken_export)
    small_model.train()
    with pytest.raises(ExportError, match="forced exporter failure"):
        export_onnx(small_model, tmp_path / "m.onnx")
    assert small_model.training

    invalid = helper.make_model(helper.make_graph([helper.make_node("NoSuchOp", ["x"], ["y"])], "g", [], []))
    with pytest.raises(ExportError, match="ONNX checker"):
        check_and_save_onnx(invalid, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_paper_config_export_parity(torch, tmp_path):
    """The paper's 224 configuration (14x14 patch grid) exports with FP32 parity on both heads."""
    import aunet
    from aunet.export.onnx_export import export_onnx
    from aunet.export.reference import synthetic_faces

    torch.manual_seed(0)
    model = aunet.build_model("paper").eval()
    path = export_onnx(model, tmp_path / "paper.onnx", simplify=False)
    images = synthetic_faces(2, 224, seed=3)
    with torch.no_grad():
        ref = model(torch.from_numpy(images))
    got = ort_run(path, images)
    assert got["patch_logits"].shape == (2, 196, 2)
    for name in ("cls_logits", "patch_logits", "score"):
        np.testing.assert_allclose(got[name], getattr(ref, name).numpy(), atol=FP32_TOL, rtol=0)


def test_default_paths():
    from pathlib import Path

    from aunet.export.cli import base_stem, default_ref_path

    assert default_ref_path(Path("d/model.fp16.onnx")) == Path("d/model.ref.npz")
    assert default_ref_path(Path("d/m.int8.plan")) == Path("d/m.ref.npz")
    assert base_stem(Path("face.v2.onnx")) == "face.v2"
    assert default_ref_path(Path("m.onnx")) == Path("m.ref.npz")


def test_detector_export_matches_the_torch_network(torch, tmp_path):
    """RetinaFace (random mobilenet0.25 weights in Pytorch_Retinaface's layout) at a fixed input: ONNX Runtime's
    loc / conf / landms equal the torch network's, and the metadata gives the runtime its priors."""
    pytest.importorskip("torchvision")
    retinaface = pytest.importorskip("aunet.faces.retinaface_net")

    torch.manual_seed(0)
    net = retinaface.RetinaFace("mobilenet0.25").eval()
    weights = tmp_path / "mobilenet0.25_Final.pth"
    torch.save(net.state_dict(), weights)
    size = 96
    r = run_cli("detector", "--weights", weights, "--out", tmp_path / "detector.onnx", "--size", size)
    assert r.exit_code == 0, r.output
    rgb = np.random.default_rng(0).uniform(0, 255, (size, size, 3)).astype(np.float32)
    x = (rgb[..., ::-1] - np.float32(retinaface.ANCHORS.mean_bgr)).transpose(2, 0, 1)[None].copy()
    session = ort.InferenceSession(str(tmp_path / "detector.onnx"), providers=["CPUExecutionProvider"])
    loc, conf, landms = session.run(None, {"image": x})
    with torch.no_grad():
        t_loc, t_face, t_ldm = (t.numpy() for t in net(torch.from_numpy(x)))
    priors = retinaface.prior_boxes(retinaface.RetinaFaceConfig(input_size=(size, size)))
    assert loc.shape == (1, len(priors), 4) and conf.shape == (1, len(priors), 2) and landms.shape == (1, len(priors), 10)
    np.testing.assert_allclose(loc, t_loc, atol=1e-4)
    np.testing.assert_allclose(conf[..., 1], t_face, atol=1e-5)
    np.testing.assert_allclose(conf.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(landms, t_ldm, atol=1e-4)
    from aunet.export.detector import read_detector_meta

    meta = read_detector_meta(tmp_path / "detector.onnx")
    assert meta["input_size"] == [size, size] and meta["variance"] == [0.1, 0.2]
    assert meta["steps"] == [8, 16, 32] and meta["output_names"] == ["loc", "conf", "landms"]
    detect = pytest.importorskip("aunet.faces.retinaface")
    runtime_detector = detect.RetinaFaceOnnx(tmp_path / "detector.onnx", device="cpu")  # the consumer reads it
    assert runtime_detector.cfg.input_size == (size, size) and len(runtime_detector._priors) == len(priors)
    assert isinstance(runtime_detector.detect(rgb.astype(np.uint8)), list)

    foreign = tmp_path / "foreign.pth"
    torch.save({"conv.weight": torch.zeros(1)}, foreign)
    bad = run_cli("detector", "--weights", foreign, "--out", tmp_path / "d2.onnx")
    assert bad.exit_code == 2 and "Traceback" not in bad.output and not (tmp_path / "d2.onnx").exists()
    error_line(bad)
    missing = run_cli("detector", "--weights", tmp_path / "none.pth", "--out", tmp_path / "d3.onnx")
    assert missing.exit_code == 2 and "not found" in error_line(missing)


def test_reference_from_real_face_crops(exported, torch, tmp_path, astronaut):
    """--data: crops from a folder (real/ and fake/ give labels) or from an aunet-prep face cache, resized to
    the model's input like the runtime does; the bundle keeps the labels and the PyTorch outputs on them."""
    import cv2

    from aunet.faces.cache import CacheWriter, VideoFaces, VideoRecord
    from aunet.export.reference import ReferenceError, load_reference, make_reference
    from aunet.backends import read_spec

    spec = read_spec(exported["onnx"])
    face = astronaut[30:250, 140:360]  # the astronaut's face, 220 px
    folder = tmp_path / "crops"
    for label, img in (("real", face), ("fake", face[:, ::-1])):
        (folder / label).mkdir(parents=True)
        cv2.imwrite(str(folder / label / "a.png"), cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2BGR))
    make_reference(exported["model"], spec, tmp_path / "f.ref.npz", samples=4, data=folder)
    ref = load_reference(tmp_path / "f.ref.npz")
    assert ref["image"].shape == (2, 3, 112, 112) and sorted(ref["label"].tolist()) == [0, 1]
    expect = cv2.resize(face, (112, 112), interpolation=cv2.INTER_AREA).transpose(2, 0, 1) / 255.0
    assert np.abs(ref["image"][ref["label"].tolist().index(0)] - expect).max() < 1e-6
    with torch.no_grad():
        np.testing.assert_allclose(ref["score"], exported["model"](torch.from_numpy(ref["image"])).score.numpy(), atol=1e-6)

    cache = CacheWriter(tmp_path / "cache", 112, spec.crop)
    crops = np.stack([cv2.resize(face, (112, 112), interpolation=cv2.INTER_AREA)] * 2)
    for vid, label in (("real/v1.mp4", 0), ("fake/v2.mp4", 1)):
        faces = VideoFaces(crops=crops, landmarks=np.zeros((2, 68, 2), np.float32), frame_indices=np.arange(2),
                           boxes=np.zeros((2, 4), np.float32), face_index=np.zeros(2, np.int64),
                           scores=np.ones(2, np.float32))
        cache.write(VideoRecord(vid, vid, label, "test", "", 2, "ok"), faces)
    make_reference(exported["model"], spec, tmp_path / "c.ref.npz", samples=4, data=tmp_path / "cache")
    ref = load_reference(tmp_path / "c.ref.npz")
    assert sorted(ref["label"].tolist()) == [0, 0, 1, 1] and ref["source"] == str(tmp_path / "cache")

    with pytest.raises(ReferenceError, match="holds no|no readable"):
        (tmp_path / "empty").mkdir()
        make_reference(exported["model"], spec, tmp_path / "e.ref.npz", samples=4, data=tmp_path / "empty")
    assert not (tmp_path / "e.ref.npz").exists()


def test_the_face_cache_gives_the_spec_its_detector_and_policy_and_the_runtime_uses_them(exported, tmp_path):
    """--data CACHE: the spec records the detector and face policy the training crops were cut with; the runtime
    then detects with that detector (dlib here, though "auto" would take BlazeFace where it is installed) and
    keeps faces by that policy. A folder of crops or no --data records nothing; a malformed cache is one line."""
    pytest.importorskip("dlib")
    from aunet.backends import read_spec
    from aunet.faces import FacePolicy
    from aunet.faces.cache import CacheWriter, VideoFaces, VideoRecord
    from aunet.runtime import Detector

    assert read_spec(exported["onnx"]).faces == {}  # no --data
    spec = read_spec(exported["onnx"])
    policy = FacePolicy(min_size=40, min_relative_size=0.3, max_faces=2)
    cache = CacheWriter(tmp_path / "cache", 112, spec.crop, detector="dlib", face_policy=policy.to_dict())
    crops = np.random.default_rng(0).integers(0, 256, (2, 112, 112, 3), dtype=np.uint8)
    faces = VideoFaces(crops=crops, landmarks=np.zeros((2, 68, 2), np.float32), frame_indices=np.arange(2),
                       boxes=np.zeros((2, 4), np.float32), face_index=np.zeros(2, np.int64),
                       scores=np.ones(2, np.float32))
    cache.write(VideoRecord("real/v1.mp4", "real/v1.mp4", 0, "train", "", 2, "ok"), faces)
    out = tmp_path / "model.onnx"
    r = run_cli("onnx", "--ckpt", exported["root"] / "best.pt", "--out", out, "--data", tmp_path / "cache",
                "--ref-samples", 2, "--no-verify")
    assert r.exit_code == 0, r.output
    assert "face detector dlib and face policy from" in r.output
    assert read_spec(out).faces == {"detector": "dlib", "policy": policy.to_dict()}
    with Detector(out, device="cpu") as det:
        assert det.face_detector.name == "dlib" and det.face_policy == policy

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "cache.json").write_text("{not json")
    r = run_cli("onnx", "--ckpt", exported["root"] / "best.pt", "--out", tmp_path / "m2.onnx", "--data",
                tmp_path / "bad")
    assert r.exit_code == 2 and "malformed cache metadata" in error_line(r)
    assert not (tmp_path / "m2.onnx").exists()


def test_detector_export_writes_blazeface_for_a_box_without_the_wheel(tmp_path, astronaut):
    """`aunet-export detector --blazeface`: the wheel's BlazeFace as an ONNX the runtime takes as --detector (the
    same detector, by name and boxes); bad combinations and a file that is no TFLite are one line, exit 2."""
    pytest.importorskip("tflite", reason="the TFLite -> ONNX converter needs the tflite package")
    from aunet.faces import DependencyError, make_face_detector
    from aunet.faces.blazeface import BlazeFaceOnnx

    try:
        in_memory = BlazeFaceOnnx(None, device="cpu", threads=1)
    except DependencyError as exc:
        pytest.skip(str(exc))
    out = tmp_path / "blazeface.onnx"
    r = run_cli("detector", "--blazeface", "--out", out)
    assert r.exit_code == 0, r.output
    from_file = make_face_detector(str(out), device="cpu")
    assert from_file.name == in_memory.name
    (a,), (b,) = from_file.detect(astronaut), in_memory.detect(astronaut)
    np.testing.assert_allclose(a.box, b.box, atol=1e-3)

    not_tflite = tmp_path / "model.tflite"
    not_tflite.write_bytes(b"\x00" * 64)
    for args, text in ((["--blazeface", "--trt"], "--blazeface and --trt are mutually exclusive"),
                       (["--blazeface", "--weights", not_tflite], "model.tflite is not a TFLite model"),
                       (["--blazeface", "--weights", tmp_path / "none.tflite"], "BlazeFace .tflite not found"),
                       ([], "--weights: give the RetinaFace weights (or --blazeface for BlazeFace)")):
        r = run_cli("detector", *args, "--out", tmp_path / "d.onnx")
        assert r.exit_code == 2, (args, r.output)
        assert text in error_line(r)
    assert not (tmp_path / "d.onnx").exists()
