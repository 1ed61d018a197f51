"""TensorRT engine build and verification (needs TensorRT and a CUDA GPU; skipped elsewhere, reason printed),
and what `aunet-export trt` / the engine backend say on a box without them."""
import json

import numpy as np
import pytest


def trt_missing_reason():
    from aunet.backends import cuda_devices

    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "TensorRT is not installed"
    try:
        import pycuda.driver  # noqa: F401
    except ImportError:
        return "pycuda is not installed"
    if not cuda_devices():
        return "no CUDA GPU is visible"
    return None


def test_without_tensorrt_the_build_says_what_is_missing(tmp_path):
    from aunet.export.tensorrt_build import tensorrt_status
    from aunet.backends import BackendUnavailable

    reason = trt_missing_reason()
    if reason is None or reason == "pycuda is not installed":
        pytest.skip("TensorRT and a GPU are present")
    with pytest.raises(BackendUnavailable) as exc:
        tensorrt_status()
    msg = str(exc.value)
    assert ("TensorRT" in msg or "GPU" in msg) and "not built" in msg and "\n" not in msg


@pytest.fixture(scope="module")
def engine(tmp_path_factory, torch):
    reason = trt_missing_reason()
    if reason:
        pytest.skip(f"TensorRT engine tests need TensorRT, pycuda and a CUDA GPU: {reason}")
    import aunet
    from aunet.export.onnx_export import export_onnx, spec_for_model
    from aunet.export.precision import make_fp16_onnx
    from aunet.export.reference import make_reference
    from aunet.export.tensorrt_build import build_engine

    root = tmp_path_factory.mktemp("trt")
    torch.manual_seed(0)
    model = aunet.build_model("small").eval()
    spec = spec_for_model(model)
    export_onnx(model, root / "model.onnx", spec=spec)
    make_reference(model, spec, root / "model.ref.npz", samples=8)
    fp16 = make_fp16_onnx(root / "model.onnx")
    sidecar = build_engine(fp16, root / "model.fp16.plan", max_batch=4, timing_cache=root / "timing.cache")
    return {"root": root, "plan": root / "model.fp16.plan", "sidecar": sidecar, "model": model}


@pytest.mark.tensorrt
def test_engine_sidecar_records_what_it_is_tied_to(engine):
    import tensorrt as trt

    from aunet.backends import cuda_devices

    side = json.loads((engine["root"] / "model.fp16.plan.json").read_text())
    assert side == json.loads(json.dumps(engine["sidecar"]))  # tuples become lists in JSON
    assert side["tensorrt"] == trt.__version__ and side["gpu"]["name"] == cuda_devices()[0]["name"]
    assert side["precision"] == "fp16" and side["profile"] == {"input": "image", "min": 1, "opt": 4, "max": 4}
    assert (engine["root"] / "timing.cache").stat().st_size > 0


@pytest.mark.tensorrt
def test_engine_matches_the_reference_within_fp16_budget(engine):
    from aunet.export.reference import load_reference
    from aunet.export.verify import derived
    from aunet.backends import TensorRTBackend, open_backend

    ref = load_reference(engine["root"] / "model.ref.npz")
    with open_backend(engine["plan"]) as backend:
        assert isinstance(backend, TensorRTBackend) and backend.max_batch == 4
        out = backend.infer(ref["image"])  # 8 > max batch: run in two chunks
    assert out["patch_logits"].shape == (8, 49, 2)
    got, want = derived(out), derived({k: ref[k] for k in ("cls_logits", "patch_logits")})
    assert np.abs(got["fake_prob"] - want["fake_prob"]).max() <= 1e-2
    assert np.abs(got["patch_prob"] - want["patch_prob"]).mean() <= 1e-2


@pytest.mark.tensorrt
def test_engine_verification_report(engine):
    from aunet.export.verify import verify_isolated

    report = verify_isolated(engine["plan"], engine["root"] / "model.ref.npz")
    assert report.get("backend", "").startswith("tensorrt:"), report
    fp = [c for c in report["checks"] if c["check"] != "decision agreement"]
    assert fp and all(c["passed"] for c in fp)  # an untrained model's decisions are ties at 0.5: not gated here


@pytest.mark.tensorrt
def test_mismatched_sidecar_is_refused(engine, tmp_path):
    import shutil

    from aunet.backends import PlanMismatchError, open_backend

    plan = tmp_path / "model.plan"
    shutil.copyfile(engine["plan"], plan)
    side = dict(engine["sidecar"], tensorrt="0.0.1")
    (tmp_path / "model.plan.json").write_text(json.dumps(side))
    with pytest.raises(PlanMismatchError, match="rebuild it here"):
        open_backend(plan)


def test_verify_of_an_engine_without_tensorrt_exits_3(tmp_path):
    from typer.testing import CliRunner

    from aunet.config import ModelConfig
    from aunet.export.cli import app
    from aunet.spec import ModelSpec

    reason = trt_missing_reason()
    if reason is None:
        pytest.skip("TensorRT and a GPU are present")
    plan = tmp_path / "model.fp16.plan"
    plan.write_bytes(b"engine")
    side = {"format": "aunet-plan", "spec": ModelSpec.from_config(ModelConfig.named("small")).to_dict(),
            "tensorrt": "10.3.0", "gpu": {"name": "NVIDIA L4", "compute_capability": "8.9"},
            "profile": {"input": "image", "min": 1, "opt": 8, "max": 32}}
    (tmp_path / "model.fp16.plan.json").write_text(json.dumps(side))
    r = CliRunner().invoke(app, ["verify", "--model", str(plan), "--ref", str(tmp_path / "model.ref.npz")])
    assert r.exit_code == 3, r.output
    assert r.output.startswith("aunet-export: error: ") and "Traceback" not in r.output
    assert reason.split()[0] in r.output
    assert r.stderr.count("\n") == 1
