"""FP16 ONNX (ModelOpt AutoCast) and INT8 Q/DQ ONNX made on a CPU box, verified against PyTorch in a child
process; the TensorRT step says clearly what is missing.

The model is the small config cut to one ART encoder and three Xception blocks: the same graph structure
(ART encoder, read-out, both heads) at a third of the export time."""
import json
import os
import stat

import numpy as np
import pytest
from typer.testing import CliRunner

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("modelopt.onnx.autocast")


def run_cli(*args):
    from aunet.export.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def the_error_line(result):
    """The one `aunet-export: error:` line, last on stderr (ModelOpt's progress bars may come before it)."""
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("aunet-export: error: "), result.output
    assert sum(line.startswith("aunet-export: error: ") for line in lines) == 1, result.output
    return lines[-1]


def decisive(torch, model, images):
    """Fit the class head (least squares) so the reference inputs get logit margins of +-3, like a trained model.

    An untrained AUNet scores every input within ~1e-3 of 0.5, where decision agreement measures noise."""
    with torch.no_grad():
        cls = model.forward_tokens(torch.from_numpy(images))[0][:, 0]
        target = torch.tensor([3.0, -3.0] * (len(images) // 2))
        centred = cls - cls.mean(0)
        w = torch.linalg.lstsq(centred, target[:, None]).solution[:, 0]
        model.cls_head.weight.zero_()
        model.cls_head.bias.zero_()
        model.cls_head.weight[1] = w
        model.cls_head.bias[1] = -(cls.mean(0) @ w)
    return model


@pytest.fixture(scope="module")
def fp16(tmp_path_factory, torch):
    """The FP32 export and reference of a small model, then `aunet-export trt --fp16` on this CPU box."""
    import aunet
    from aunet.export.onnx_export import export_onnx, spec_for_model
    from aunet.export.reference import make_reference, synthetic_faces

    root = tmp_path_factory.mktemp("fp16")
    torch.manual_seed(0)
    cfg = aunet.ModelConfig.named("small").replace(name="tiny", num_encoders=1, backbone_depth=3)
    model = decisive(torch, aunet.build_model(cfg).eval(), synthetic_faces(8, 112, seed=0))
    spec = spec_for_model(model)
    export_onnx(model, root / "model.onnx", spec=spec)
    make_reference(model, spec, root / "model.ref.npz", samples=8, seed=0)
    result = run_cli("trt", "--onnx", root / "model.onnx", "--fp16")
    return {"root": root, "result": result, "onnx": root / "model.fp16.onnx", "ref": root / "model.ref.npz"}


def have_tensorrt_gpu():
    from aunet.backends import cuda_devices

    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return bool(cuda_devices())


def test_trt_command_writes_fp16_onnx_then_says_what_is_missing(fp16):
    if have_tensorrt_gpu():
        pytest.skip("TensorRT and a GPU are present: the engine path is tested in test_export_trt.py")
    result = fp16["result"]
    assert result.exit_code == 3, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("aunet-export: error: ") and ("TensorRT" in last or "GPU" in last) and "not built" in last
    assert the_error_line(result) == last
    assert "Traceback" not in result.output
    assert fp16["onnx"].is_file()
    assert not list(fp16["root"].glob("*.plan*"))  # no engine, no sidecar
    report = json.loads((fp16["root"] / "model.fp16.onnx.verify.json").read_text())
    assert report["passed"] and report["precision"] == "fp16"


def test_fp16_onnx_keeps_fp32_io_and_sensitive_ops(fp16):
    from onnx import TensorProto

    from aunet.backends import read_spec

    model = onnx.load(str(fp16["onnx"]))
    io_types = {vi.name: vi.type.tensor_type.elem_type for vi in [*model.graph.input, *model.graph.output]}
    assert io_types == {n: TensorProto.FLOAT for n in ("image", "cls_logits", "patch_logits", "score")}
    assert sum(i.data_type == TensorProto.FLOAT16 for i in model.graph.initializer) > 10  # the convs are FP16
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in [*inferred.graph.value_info, *inferred.graph.input]}
    types.update({i.name: i.data_type for i in model.graph.initializer})
    kept = [n for n in model.graph.node  # AutoCast's boundary Casts carry the scope too: they are the edges
            if n.op_type != "Cast" and (n.op_type in ("LayerNormalization", "Softmax") or "/importance/" in n.name)]
    assert len([n for n in kept if n.op_type == "LayerNormalization"]) == 4  # 2 per token layer: encoder, read-out
    assert len([n for n in kept if "/importance/" in n.name]) > 10
    for node in kept:  # computed in float32: every floating input and output is FLOAT
        for name in [*node.input, *node.output]:
            if name and types.get(name) in (TensorProto.FLOAT, TensorProto.FLOAT16):
                assert types[name] == TensorProto.FLOAT, (node.name, name)
    spec = read_spec(fp16["onnx"])
    assert spec.precision == "fp16" and spec.provenance["fp32_kept"]["nodes"] == len(kept)
    assert spec.config == read_spec(fp16["root"] / "model.onnx").config


def test_fp16_verified_in_a_child_process_at_a_safe_ort_level(fp16):
    from aunet.export.verify import verify_isolated

    report = verify_isolated(fp16["onnx"], fp16["ref"], device="cpu")
    assert report["passed"], report
    assert report["ort_graph_optimization"] == "extended"  # ORT_ENABLE_ALL segfaulted on such graphs
    assert {c["check"] for c in report["checks"]} == {"fake_prob max_abs", "patch_prob mean_abs", "decision agreement"}
    m = report["batches"]["8"]
    assert m["fake_prob"]["max_abs"] <= 1e-2 and m["patch_prob"]["mean_abs"] <= 1e-2
    assert m["decision"]["agreement"] == 1.0
    # FP16 is not bit-exact: the check measures a real difference, well inside the FP16 budget
    assert 0 < m["cls_logits"]["max_abs"] < 0.1


def test_fp16_thresholds_catch_a_broken_graph(fp16, tmp_path):
    """Against FP16 thresholds, a reference whose decisions are flipped fails (exit 1)."""
    with np.load(fp16["ref"]) as z:
        data = {k: z[k] for k in z.files}
    data["cls_logits"] = data["cls_logits"][:, ::-1].copy()
    data["score"] = 1.0 - data["score"]
    flipped = tmp_path / "flipped.ref.npz"
    np.savez(flipped, **data)
    result = run_cli("verify", "--model", fp16["onnx"], "--ref", flipped, "--report", tmp_path / "r.json")
    assert result.exit_code == 1, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert not any(c["passed"] for c in report["checks"] if c["check"] == "decision agreement")


def test_a_crashing_backend_is_reported_not_fatal(fp16, tmp_path, monkeypatch):
    """verify_isolated survives a child that dies of SIGSEGV (what ORT did on FP16 graphs at ORT_ENABLE_ALL)."""
    import aunet.export.verify as verify

    crasher = tmp_path / "crash.sh"
    crasher.write_text("#!/bin/sh\nkill -SEGV $$\n")
    crasher.chmod(crasher.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(verify.sys, "executable", str(crasher))
    report = verify.verify_isolated(fp16["onnx"], fp16["ref"])
    assert report["passed"] is False and "SIGSEGV" in report["crash"]


def test_trt_command_bad_input(fp16, tmp_path):
    both = run_cli("trt", "--onnx", fp16["root"] / "model.onnx", "--fp16", "--int8")
    assert both.exit_code == 2
    assert both.stderr == "aunet-export: error: --fp16 and --int8 are mutually exclusive: give one\n"
    neither = run_cli("trt", "--onnx", fp16["root"] / "model.onnx")
    assert neither.exit_code == 2 and neither.stderr == "aunet-export: error: give --fp16 or --int8\n"

    foreign = tmp_path / "foreign.onnx"
    model = onnx.load(str(fp16["root"] / "model.onnx"), load_external_data=False)
    del model.metadata_props[:]  # an ONNX that aunet-export did not make
    onnx.save(model, str(foreign))
    r = run_cli("trt", "--onnx", foreign, "--fp16")
    assert r.exit_code == 2 and "aunet.spec" in r.output and not (tmp_path / "foreign.fp16.onnx").exists()
    assert r.stderr.startswith("aunet-export: error: ") and r.stderr.count("\n") == 1

    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(os.urandom(256))
    r = run_cli("trt", "--onnx", corrupt, "--fp16")
    assert r.exit_code == 2 and "not a readable ONNX" in r.output
    assert r.stderr.startswith("aunet-export: error: ") and r.stderr.count("\n") == 1
    for r in (both, neither):
        assert "Traceback" not in r.output


def test_int8_onnx_to_the_accuracy_target_and_its_judgement_gates_the_engine(fp16, tmp_path, monkeypatch):
    """`trt --int8 --calib CACHE`: the calibration module's target loop (split by video, judged on held-out
    faces) writes the Q/DQ ONNX with its judgement; a missed target stops before the engine (exit 1) unless
    --force, which goes on to the verification. Without --calib, or with a calibration set not drawn from a
    face cache (nothing to judge on): exit 2."""
    dataset = pytest.importorskip("aunet.calibration.dataset")
    target = pytest.importorskip("aunet.calibration.target")
    from aunet.backends import read_spec
    from aunet.demo.sample_data import make_sample_images
    from aunet.export.reference import synthetic_faces
    from aunet.prep import PrepSettings, discover, run_prep

    onnx_path = fp16["root"] / "model.onnx"
    r = run_cli("trt", "--onnx", onnx_path, "--int8", "--out", tmp_path / "m.plan")
    assert r.exit_code == 2 and "calibration data" in the_error_line(r)

    spec = read_spec(onnx_path)
    with pytest.warns(UserWarning, match="noisy"):  # 16 crops: enough for a test, not for a deployment
        calib = dataset.CalibrationSet.from_array(synthetic_faces(16, 112, seed=5), spec, source="synthetic")
    calib.save(tmp_path / "calib.npz")
    r = run_cli("trt", "--onnx", onnx_path, "--int8", "--calib", tmp_path / "calib.npz", "--out", tmp_path / "m.plan")
    assert r.exit_code == 2 and "judged on held-out faces: pass a face cache" in the_error_line(r)

    make_sample_images(tmp_path / "raw", 20, np.random.default_rng(0))
    cache = tmp_path / "cache"
    run_prep(discover(tmp_path / "raw"), cache, PrepSettings(size=spec.input_size, crop=spec.crop, frames=1,
                                                            detector="dlib"), show_progress=False)
    real_loop = target.quantize_to_target
    runs = []

    def one_method_no_budget(*args, **kwargs):  # the real loop, kept short: one method, no node kept in FP32
        runs.append(kwargs)
        return real_loop(*args, **{**kwargs, "methods": ("max",), "budget": target.Budget(0, 0)})

    monkeypatch.setattr(target, "quantize_to_target", one_method_no_budget)
    int8 = fp16["root"] / "model.int8.onnx"
    r = run_cli("trt", "--onnx", onnx_path, "--int8", "--calib", cache, "--out", tmp_path / "m.plan")
    assert runs and runs[0]["target"] == "tensorrt" and runs[0]["data"] == cache
    assert int8.is_file() and read_spec(int8).precision == "int8", r.output
    judgement = read_spec(int8).provenance["calibration"]["judgement"]
    assert judgement["held_out"] and judgement["num_faces"] > 0
    # This toy head separates near-identical class tokens with large weights, which INT8 activations resolve
    # poorly: on 6-8 held-out faces its judgement passes or fails with the draw. Either way the gate decides:
    # failed -> exit 1 before anything else, --force goes on; passed -> straight on to the verification.
    if not judgement["passed"]:
        assert r.exit_code == 1 and "failed its held-out accuracy judgement" in the_error_line(r)
        assert not list(tmp_path.glob("m.plan*"))
        r = run_cli("trt", "--onnx", int8, "--force", "--out", tmp_path / "m.plan")
        assert "used anyway (--force)" in " ".join(r.stdout.split())
    else:
        assert "held-out accuracy judgement" not in r.output and "held-out faces (agreement" in " ".join(r.stdout.split())
    report = json.loads((fp16["root"] / "model.int8.onnx.verify.json").read_text())
    assert {c["check"] for c in report["checks"]} == {"decision agreement", "score auc_drop_points"}
    last = r.output.strip().splitlines()[-1]
    if not report["passed"]:  # past the judgement, the verification against PyTorch still guards the engine
        assert r.exit_code == 1 and "failed its verification" in last and "no engine" in last
        assert not list(tmp_path.glob("m.plan*"))
    elif not have_tensorrt_gpu():
        assert r.exit_code == 3 and the_error_line(r) == last and not list(tmp_path.glob("m.plan*"))
