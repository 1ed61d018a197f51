"""aunet.backends: torch-free, chosen by suffix, spec from the artifact, engines tied to their GPU."""
import json
import subprocess
import sys

import numpy as np
import pytest

from aunet.config import ModelConfig
from aunet.spec import ModelSpec, SpecError

SMALL = ModelConfig.named("small")  # 112 px, 7x7 patch grid


def plumbing_onnx(path, spec, opset=17):
    """A tiny ONNX with AUNet's I/O contract (not AUNet): cls = GAP(image) @ W, patches = 16x16 average pooling
    @ W, score = mean(cls). Exact in numpy, so backend plumbing is checked without a 190 MB export."""
    from onnx import TensorProto, helper, numpy_helper

    import aunet.artifacts as ox

    w = np.array([[1.0, -1.0], [0.5, 2.0], [-2.0, 0.25]], np.float32)
    nodes = [
        helper.make_node("GlobalAveragePool", ["image"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["gap2"]),
        helper.make_node("MatMul", ["gap2", "w"], ["cls_logits"]),
        helper.make_node("AveragePool", ["image"], ["pooled"], kernel_shape=[16, 16], strides=[16, 16]),
        helper.make_node("Reshape", ["pooled", "shape"], ["flat"]),
        helper.make_node("Transpose", ["flat"], ["tokens"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["tokens", "w"], ["patch_logits"]),
        helper.make_node("ReduceMean", ["cls_logits"], ["score"], axes=[1], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "plumbing",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 112, 112])],
        [helper.make_tensor_value_info("cls_logits", TensorProto.FLOAT, ["batch", 2]),
         helper.make_tensor_value_info("patch_logits", TensorProto.FLOAT, ["batch", 49, 2]),
         helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([0, 3, 49], np.int64), "shape")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    if spec is not None:
        ox.write_onnx_spec(model, spec)
    return ox.check_and_save_onnx(model, path)


def expected(images):
    w = np.array([[1.0, -1.0], [0.5, 2.0], [-2.0, 0.25]])
    cls = images.mean((2, 3)) @ w
    pooled = images.reshape(len(images), 3, 7, 16, 7, 16).mean((3, 5)).reshape(len(images), 3, 49)
    return {"cls_logits": cls, "patch_logits": pooled.transpose(0, 2, 1) @ w, "score": cls.mean(1)}


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    path = tmp_path_factory.mktemp("backends") / "plumbing.onnx"
    return plumbing_onnx(path, ModelSpec.from_config(SMALL, provenance={"precision": "fp32"}))


def test_importing_the_runtime_backends_loads_no_heavy_module():
    code = ("import sys, aunet.backends; "
            "print(sorted(m for m in ('torch', 'onnxruntime', 'tensorrt', 'pycuda', 'onnx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_onnx_backend_runs_the_graph_at_any_batch(onnx_model):
    from aunet.backends import OnnxRuntimeBackend, open_backend

    rng = np.random.default_rng(0)
    with open_backend(onnx_model, device="cpu") as backend:
        assert isinstance(backend, OnnxRuntimeBackend)
        assert backend.name == "onnxruntime:CPU" and backend.max_batch is None
        assert backend.spec.config == SMALL and backend.optimization == "all"
        for b in (1, 5):
            images = rng.random((b, 3, 112, 112), dtype=np.float32)
            out = backend.infer(images)
            assert set(out) == {"cls_logits", "patch_logits", "score"}
            for k, v in expected(images.astype(np.float64)).items():
                assert out[k].dtype == np.float32
                np.testing.assert_allclose(out[k], v, atol=1e-5)
        with pytest.raises(ValueError, match=r"expected images \[B>=1, 3, 112, 112\]"):
            backend.infer(np.zeros((2, 3, 64, 64), np.float32))
        assert backend.infer(rng.random((1, 3, 112, 112)))["score"].dtype == np.float32  # float64 in: converted


def test_reduced_precision_graphs_get_the_safe_ort_level(tmp_path):
    from aunet.backends import open_backend

    path = plumbing_onnx(tmp_path / "m.fp16.onnx", ModelSpec.from_config(SMALL, provenance={"precision": "fp16"}))
    with open_backend(path, device="cpu") as backend:
        assert backend.optimization == "extended"
    with open_backend(path, device="cpu", optimization="basic") as backend:
        assert backend.optimization == "basic"
    int8 = plumbing_onnx(tmp_path / "m.int8.onnx", ModelSpec.from_config(SMALL, provenance={"precision": "int8"}))
    with open_backend(int8, device="cpu") as backend:  # Q/DQ graphs run at "all", as FP32 does
        assert backend.optimization == "all"


def test_read_spec_and_bad_artifacts(onnx_model, tmp_path):
    from aunet.backends import BackendError, open_backend, read_spec

    assert read_spec(onnx_model).model == SMALL.to_dict()
    no_meta = plumbing_onnx(tmp_path / "foreign.onnx", None)
    with pytest.raises(SpecError, match="aunet.spec"):
        open_backend(no_meta)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\x01garbage" * 50)
    with pytest.raises(BackendError, match="not a readable ONNX"):
        read_spec(garbage)
    with pytest.raises(BackendError, match="unknown model type"):
        open_backend(tmp_path / "model.pt")
    with pytest.raises(BackendError, match="not found"):
        open_backend(tmp_path / "missing.onnx")


def test_device_choice(onnx_model):
    from aunet.backends import BackendError, BackendUnavailable, cuda_devices, ort_providers

    assert ort_providers("cpu") == ["CPUExecutionProvider"]
    assert ort_providers("auto")[-1] == "CPUExecutionProvider"
    with pytest.raises(BackendError, match="unknown device"):
        ort_providers("npu")
    if not cuda_devices():
        assert ort_providers("auto") == ["CPUExecutionProvider"]  # the GPU wheel lists CUDA even without a GPU
        with pytest.raises(BackendUnavailable, match="not available"):
            ort_providers("cuda")


def sidecar(**changes):
    data = {"format": "aunet-plan", "spec": ModelSpec.from_config(SMALL).to_dict(), "precision": "fp16",
            "tensorrt": "10.3.0", "gpu": {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"},
            "profile": {"input": "image", "min": 1, "opt": 8, "max": 32}}
    data.update(changes)
    return data


def test_engine_sidecar_is_checked_against_the_box():
    from aunet.backends import PlanMismatchError, check_plan_sidecar

    box = {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
    check_plan_sidecar(sidecar(), tensorrt_version="10.3.0", gpu=box)  # same box: accepted
    with pytest.raises(PlanMismatchError) as exc:
        check_plan_sidecar(sidecar(), tensorrt_version="10.7.0", gpu=box)
    msg = str(exc.value)
    assert "TensorRT 10.3.0" in msg and "TensorRT 10.7.0" in msg and "rebuild" in msg and "\n" not in msg
    orin = {"name": "Orin", "compute_capability": "8.7"}
    with pytest.raises(PlanMismatchError, match=r"H100.*compute 9\.0.*Orin \(compute 8\.7\)"):
        check_plan_sidecar(sidecar(), tensorrt_version="10.3.0", gpu=orin)
    with pytest.raises(PlanMismatchError, match="compute 8.9"):  # same name, other compute capability
        check_plan_sidecar(sidecar(), tensorrt_version="10.3.0", gpu={**box, "compute_capability": "8.9"})


def test_engine_spec_comes_from_the_sidecar(tmp_path):
    from aunet.backends import (BackendError, BackendUnavailable, TensorRTBackend, cuda_devices,
                                        open_backend, read_spec)

    plan = tmp_path / "model.fp16.plan"
    plan.write_bytes(b"not really an engine")
    with pytest.raises(BackendError, match="sidecar model.fp16.plan.json is missing"):
        open_backend(plan)
    (tmp_path / "model.fp16.plan.json").write_text(json.dumps(sidecar()))
    spec = read_spec(plan)
    assert spec.config == SMALL
    (tmp_path / "model.engine.json").write_text("{broken")
    (tmp_path / "model.engine").write_bytes(b"x")
    with pytest.raises(BackendError, match="unreadable sidecar"):
        read_spec(tmp_path / "model.engine")
    try:
        import tensorrt  # noqa: F401

        have_trt = True
    except ImportError:
        have_trt = False
    if not have_trt or not cuda_devices():
        # No CUDA context, no traceback: one message saying what is missing.
        with pytest.raises(BackendUnavailable, match="TensorRT is not installed|pycuda|no CUDA GPU"):
            TensorRTBackend(plan)
    with pytest.raises(BackendError, match="CUDA GPU, not on device 'cpu'"):
        open_backend(plan, device="cpu")


def fake_tensorrt_and_cuda(max_batch, calls):
    """Stand-ins for tensorrt and pycuda.driver, enough to run TensorRTBackend's buffer and call plumbing on a
    CPU box (the real engine path runs in test_export_trt.py where TensorRT and a GPU exist). The fake engine
    computes cls_logits = per-image channel means [:2], patch_logits = 0, score = mean of the image."""
    import types

    memory = {}  # "device" address -> numpy buffer

    class DeviceMem:
        def __init__(self, nbytes):
            self._addr = len(memory) + 1
            memory[self._addr] = np.zeros(nbytes, np.uint8)

        def __int__(self):
            return self._addr

        def free(self):
            calls.append(("free", self._addr))
            memory.pop(self._addr)

    class Context:
        def __init__(self):
            self._shape, self._addr = None, {}

        def set_tensor_address(self, name, addr):
            self._addr[name] = addr

        def set_input_shape(self, name, shape):
            calls.append(("set_input_shape", name, tuple(shape)))
            self._shape = tuple(shape)

        def execute_async_v3(self, stream):
            b = self._shape[0]
            x = memory[self._addr["image"]].view(np.float32)[: int(np.prod(self._shape))].reshape(self._shape)
            memory[self._addr["cls_logits"]].view(np.float32)[: 2 * b] = x.mean((2, 3))[:, :2].ravel()
            memory[self._addr["patch_logits"]].view(np.float32)[: 98 * b] = 0.0
            memory[self._addr["score"]].view(np.float32)[:b] = x.mean((1, 2, 3))
            return True

    class Engine:
        _names = ["image", "cls_logits", "patch_logits", "score"]
        num_io_tensors = 4

        def get_tensor_name(self, i):
            return self._names[i]

        def get_tensor_mode(self, name):
            return "in" if name == "image" else "out"

        def get_tensor_profile_shape(self, name, profile):
            return (1, 3, 112, 112), (1, 3, 112, 112), (max_batch, 3, 112, 112)

        def get_tensor_dtype(self, name):
            return "float32"

        def get_tensor_shape(self, name):
            return {"image": (-1, 3, 112, 112), "cls_logits": (-1, 2), "patch_logits": (-1, 49, 2),
                    "score": (-1,)}[name]

        def get_tensor_format(self, name):
            return "LINEAR"

        def create_execution_context(self):
            return Context()

    trt = types.SimpleNamespace(
        __version__="10.3.0", Logger=type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None}),
        Runtime=lambda logger: types.SimpleNamespace(deserialize_cuda_engine=lambda data: Engine()),
        TensorIOMode=types.SimpleNamespace(INPUT="in"), TensorFormat=types.SimpleNamespace(LINEAR="LINEAR"),
        nptype=lambda t: np.float32)

    def copy(dst, src):
        dst = memory[dst._addr] if isinstance(dst, DeviceMem) else dst.view(np.uint8)
        src = memory[src._addr] if isinstance(src, DeviceMem) else src.view(np.uint8)
        n = min(dst.nbytes, src.nbytes)
        dst[:n] = src[:n]

    ctx = types.SimpleNamespace(push=lambda: calls.append(("push",)), detach=lambda: calls.append(("detach",)))
    cuda = types.SimpleNamespace(
        init=lambda: None, Device=lambda i: types.SimpleNamespace(retain_primary_context=lambda: ctx),
        Context=types.SimpleNamespace(pop=lambda: calls.append(("pop",))),
        Stream=lambda: types.SimpleNamespace(handle=7, synchronize=lambda: None),
        pagelocked_empty=lambda size, dtype: np.empty(size, dtype), mem_alloc=DeviceMem,
        memcpy_htod_async=lambda dev, host, stream: copy(dev, host),
        memcpy_dtoh_async=lambda host, dev, stream: copy(host, dev))
    return trt, cuda, memory


def test_tensorrt_backend_plumbing_with_fake_driver(tmp_path, monkeypatch):
    import types

    import aunet.backends as backends

    calls = []
    trt, cuda, memory = fake_tensorrt_and_cuda(max_batch=4, calls=calls)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "pycuda", types.SimpleNamespace(driver=cuda))
    monkeypatch.setitem(sys.modules, "pycuda.driver", cuda)
    gpu = {"index": 0, "name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
    monkeypatch.setattr(backends, "cuda_devices", lambda: [gpu])
    plan = tmp_path / "model.fp16.plan"
    plan.write_bytes(b"engine")
    (tmp_path / "model.fp16.plan.json").write_text(json.dumps(sidecar()))

    images = np.random.default_rng(0).random((10, 3, 112, 112), dtype=np.float32)
    with backends.open_backend(plan) as backend:
        assert backend.max_batch == 4 and backend.name == "tensorrt:10.3.0:NVIDIA H100 80GB HBM3"
        out = backend.infer(images)  # 10 images, max batch 4: chunks of 4, 4, 2
    np.testing.assert_allclose(out["cls_logits"], images.mean((2, 3))[:, :2], rtol=1e-6)
    np.testing.assert_allclose(out["score"], images.mean((1, 2, 3)), rtol=1e-6)
    assert out["patch_logits"].shape == (10, 49, 2)
    shapes = [c[2][0] for c in calls if c[0] == "set_input_shape"]
    assert shapes == [4, 4, 2]
    assert memory == {} and calls[-1] == ("detach",)  # every buffer freed, the context released
    assert calls.count(("push",)) == calls.count(("pop",))

    monkeypatch.setattr(backends, "cuda_devices", lambda: [{**gpu, "name": "NVIDIA L4", "compute_capability": "8.9"}])
    with pytest.raises(backends.PlanMismatchError, match="NVIDIA L4"):
        backends.open_backend(plan)


def test_verification_runs_without_torch(onnx_model, tmp_path):
    """`aunet-export verify` on an edge box: the bundle is read, the backend run and compared, torch never loaded."""
    images = np.random.default_rng(1).random((3, 3, 112, 112), dtype=np.float32)
    ref = {k: v.astype(np.float32) for k, v in expected(images.astype(np.float64)).items()}
    spec = ModelSpec.from_config(SMALL, provenance={"precision": "fp32"})
    np.savez(tmp_path / "plumbing.ref.npz", image=images, label=np.full(3, -1), source=np.array("test"),
             spec=np.array(spec.to_json()), **ref)
    code = ("import sys; from aunet.export.verify import verify_model; "
            f"r = verify_model({str(onnx_model)!r}, {str(tmp_path / 'plumbing.ref.npz')!r}, device='cpu'); "
            "print(r['passed'], sorted(r['batches']), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "['1',", "'3']", "False"]
