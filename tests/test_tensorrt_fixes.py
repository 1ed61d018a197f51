"""The TensorRT builder and engine backend against the real bindings' conventions (tests/trt_fakes.py): timing
caches that TensorRT rejects, the STRONGLY_TYPED flag per major version, one logger per process, engine I/O the
backend cannot bind, the CUDA context left after close, what a failed pycuda import means; and gpu_check's FP16
step leaving the FP32 weights as they were."""
import importlib.abc
import importlib.util
import logging
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import trt_fakes
from aunet.config import ModelConfig
from aunet.spec import ModelSpec, SpecError

REPO = Path(__file__).resolve().parents[1]
BUILD_LOG = "aunet.export.tensorrt_build"


def spec_onnx(folder: Path, precision: str = "fp16") -> Path:
    """A tiny ONNX carrying the small config's spec: all the builder reads of it (the fake parser parses nothing)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from aunet.artifacts import write_onnx_spec

    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["out"])], "spec-only",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 112, 112])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 3, 112, 112])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    write_onnx_spec(model, ModelSpec.from_config(ModelConfig.named("small"), provenance={"precision": precision}))
    path = folder / f"model.{precision}.onnx"
    onnx.save(model, str(path))
    return path


def build(folder: Path, cache: Path | None = None, name: str = "model.fp16.plan"):
    from aunet.export.tensorrt_build import build_engine

    onnx_path = folder / "model.fp16.onnx"
    if not onnx_path.exists():
        spec_onnx(folder)
    return build_engine(onnx_path, folder / name, max_batch=4, timing_cache=cache)


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == BUILD_LOG and r.levelno >= logging.WARNING]


# --- timing cache ---


def test_corrupt_timing_cache_is_replaced_and_the_engine_built(tmp_path, monkeypatch, caplog):
    world, trt, _ = trt_fakes.install(monkeypatch)
    cache = tmp_path / "model.timing.cache"
    cache.write_bytes(b"\x00not a timing cache")
    with caplog.at_level(logging.WARNING, logger=BUILD_LOG):
        build(tmp_path, cache)
    assert (tmp_path / "model.fp16.plan").read_bytes().startswith(b"ENGINE")
    (msg,) = warnings_of(caplog)
    assert str(cache) in msg and "empty" in msg and "\n" not in msg
    assert trt.IBuilderConfig().create_timing_cache(cache.read_bytes()) is not None  # now a cache of this GPU

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=BUILD_LOG):
        build(tmp_path, cache)
    assert warnings_of(caplog) == []  # reused as it is
    assert cache.read_bytes().endswith(b"tactic0,tactic1")


def test_timing_cache_of_another_gpu_starts_empty_and_keeps_the_engine(tmp_path, monkeypatch, caplog):
    cache = tmp_path / "model.timing.cache"
    trt_fakes.install(monkeypatch, trt_fakes.TrtWorld(device="NVIDIA L4 sm_89"))
    build(tmp_path, cache)
    assert b"NVIDIA L4" in cache.read_bytes()

    world, _, _ = trt_fakes.install(monkeypatch)  # the same files on an H100
    with caplog.at_level(logging.WARNING, logger=BUILD_LOG):
        sidecar = build(tmp_path, cache, name="h100.plan")
    assert (tmp_path / "h100.plan").read_bytes().startswith(b"ENGINE") and (tmp_path / "h100.plan.json").is_file()
    assert sidecar["gpu"]["name"] == trt_fakes.GPU["name"]
    (msg,) = warnings_of(caplog)
    assert "another GPU" in msg and str(cache) in msg
    assert cache.read_bytes().split(b"|")[2] == world.device.encode()  # this GPU's cache replaced the other one


def test_a_timing_cache_that_cannot_be_saved_never_costs_the_engine(tmp_path, monkeypatch, caplog):
    trt_fakes.install(monkeypatch)
    cache = tmp_path / "cache-is-a-folder"
    cache.mkdir()
    with caplog.at_level(logging.WARNING, logger=BUILD_LOG):
        build(tmp_path, cache)
    assert (tmp_path / "model.fp16.plan").read_bytes().startswith(b"ENGINE")
    assert (tmp_path / "model.fp16.plan.json").is_file()
    (msg,) = warnings_of(caplog)
    assert "could not be saved" in msg and str(cache) in msg


# --- network flags, versions, logger ---


@pytest.mark.parametrize("version, flagged", [("10.3.0", True), ("11.4.0.106", False)])
def test_strongly_typed_flag_only_on_tensorrt_10(tmp_path, monkeypatch, version, flagged):
    world, trt, _ = trt_fakes.install(monkeypatch, trt_fakes.TrtWorld(version=version))
    sidecar = build(tmp_path)
    strongly = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert bool(world.built_network_flags[-1] & strongly) is flagged
    assert sidecar["strongly_typed"] is True and sidecar["tensorrt"] == version
    assert not [m for _, m in world.logs if "deprecated" in m]


def test_tensorrt_before_10_is_refused_before_building(tmp_path, monkeypatch):
    from aunet.backends import BackendUnavailable

    world, _, _ = trt_fakes.install(monkeypatch, trt_fakes.TrtWorld(version="8.6.1"))
    with pytest.raises(BackendUnavailable, match=r"TensorRT 8\.6\.1 .*10 or 11.*not built"):
        build(tmp_path)
    assert world.built_network_flags == [] and not (tmp_path / "model.fp16.plan").exists()


def test_one_tensorrt_logger_for_the_builder_and_the_runtime(tmp_path, monkeypatch):
    from aunet.backends import open_backend

    world, _, _ = trt_fakes.install(monkeypatch)
    build(tmp_path)
    build(tmp_path, name="again.plan")
    with open_backend(tmp_path / "model.fp16.plan") as backend:
        backend.infer(np.zeros((1, 3, 112, 112), np.float32))
    assert world.loggers_created == 1
    assert not [m for _, m in world.logs if "logger" in m]


# --- the engine backend ---


def test_engine_runs_and_close_leaves_no_context_behind(tmp_path, monkeypatch):
    from aunet.backends import open_backend

    _, _, driver = trt_fakes.install(monkeypatch)
    build(tmp_path)
    images = np.random.default_rng(0).random((6, 3, 112, 112), dtype=np.float32)
    with open_backend(tmp_path / "model.fp16.plan") as backend:
        assert backend.max_batch == 4
        out = backend.infer(images)  # chunks of 4 and 2
    np.testing.assert_allclose(out["cls_logits"], images.mean((2, 3))[:, :2], rtol=1e-6)
    np.testing.assert_allclose(out["score"], images.mean((1, 2, 3)), rtol=1e-6)
    assert out["patch_logits"].shape == (6, 49, 2)
    assert trt_fakes.DEVICE_MEMORY == {}
    assert driver.primary_refs == {0: 0}
    assert driver.stack == []  # detach() pushed the primary context to release it: popped again


def test_engine_with_an_output_the_spec_does_not_name_is_refused(tmp_path, monkeypatch):
    from aunet.backends import open_backend

    world, trt, driver = trt_fakes.install(monkeypatch)
    world.engine_outputs["debug_features"] = (trt.float32, (16,))
    build(tmp_path)
    with pytest.raises(SpecError, match="debug_features"):
        open_backend(tmp_path / "model.fp16.plan")
    assert trt_fakes.DEVICE_MEMORY == {} and driver.stack == [] and driver.primary_refs == {0: 0}


def test_engine_with_a_bf16_tensor_is_a_clear_error(tmp_path, monkeypatch):
    from aunet.backends import BackendError, open_backend

    world, trt, driver = trt_fakes.install(monkeypatch)
    world.engine_outputs["score"] = (trt.bfloat16, ())
    build(tmp_path)
    with pytest.raises(BackendError) as exc:
        open_backend(tmp_path / "model.fp16.plan")
    msg = str(exc.value)
    assert "'score'" in msg and "BF16" in msg and "\n" not in msg
    assert trt_fakes.DEVICE_MEMORY == {} and driver.stack == [] and driver.primary_refs == {0: 0}


class _DriverWithoutLibcuda(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``import pycuda.driver`` as on a box where pycuda is installed but libcuda.so.1 is not."""

    def find_spec(self, fullname, path=None, target=None):
        return importlib.util.spec_from_loader(fullname, self) if fullname == "pycuda.driver" else None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        raise ImportError("libcuda.so.1: cannot open shared object file: No such file or directory")


def test_pycuda_missing_and_cuda_driver_missing_are_told_apart(tmp_path, monkeypatch):
    from aunet.backends import BackendUnavailable, open_backend

    trt_fakes.install(monkeypatch, with_pycuda=False)
    build(tmp_path)
    plan = tmp_path / "model.fp16.plan"
    monkeypatch.setitem(sys.modules, "pycuda", None)
    monkeypatch.delitem(sys.modules, "pycuda.driver", raising=False)
    with pytest.raises(BackendUnavailable, match="pycuda is not installed"):
        open_backend(plan)

    package = types.ModuleType("pycuda")
    package.__path__ = []
    monkeypatch.setitem(sys.modules, "pycuda", package)
    monkeypatch.setattr(sys, "meta_path", [_DriverWithoutLibcuda(), *sys.meta_path])
    with pytest.raises(BackendUnavailable) as exc:
        open_backend(plan)
    msg = str(exc.value)
    assert "pycuda is installed" in msg and "CUDA driver library" in msg and "libcuda.so.1" in msg
    assert "not installed" not in msg


# --- scripts/gpu_check.py ---


def test_gpu_check_fp16_step_leaves_the_fp32_weights_bit_for_bit(tmp_path, torch):
    import aunet
    from aunet.export.reference import synthetic_faces
    from aunet.model.checkpoint import load_checkpoint, load_model, save_checkpoint

    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)

    torch.manual_seed(0)
    save_checkpoint(tmp_path / "best.pt", aunet.build_model("small").eval())
    model = load_model(tmp_path / "best.pt")
    images = torch.from_numpy(synthetic_faces(1, 112, seed=0))
    rows = gpu_check.torch_checks(model, images, device="cpu")  # the CUDA steps, run on the CPU

    assert any(check.startswith("torch CPU half()") for check, *_ in rows)
    saved = load_checkpoint(tmp_path / "best.pt")["model"]
    state = model.state_dict()
    assert state.keys() == saved.keys()
    changed = [k for k in saved if state[k].dtype != saved[k].dtype or not torch.equal(state[k], saved[k])]
    assert changed == []
    assert next(model.parameters()).device.type == "cpu"
