"""Each pip extra in pyproject.toml brings the distributions its command paths import, on x86_64 and aarch64.

Nothing is installed: the extras are read from pyproject.toml, their environment markers evaluated for each
machine, self-references (``aunet[trt-cu12]``) followed, and the import names mapped to distributions below."""
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
MACHINES = ("x86_64", "aarch64")

# import name -> the distributions that install it
PROVIDERS = {
    "onnx": {"onnx"},
    "onnxruntime": {"onnxruntime", "onnxruntime-gpu"},
    "modelopt": {"nvidia-modelopt"},
    "pycuda": {"pycuda"},
    "tensorrt": {"tensorrt", "tensorrt-cu12", "tensorrt-cu13"},
    "av": {"av"},
}

# `aunet-export trt --onnx model.fp16.onnx` on the box: read_spec (onnx), the precision ONNX verified on ONNX
# Runtime, the build (tensorrt), the engine verified (tensorrt, pycuda).
ENGINE_BUILD = {"onnx", "onnxruntime", "tensorrt", "pycuda"}
# `aunet-infer clip.mp4 --engine model.fp16.plan --detector retinaface.onnx`: the engine backend, the detector ONNX.
ENGINE_RUNTIME = {"tensorrt", "pycuda", "onnxruntime"}
# `aunet-export trt --onnx model.onnx --fp16` on the workstation: ModelOpt AutoCast, then ONNX Runtime verifies it.
FP16_CONVERSION = {"modelopt", "onnx", "onnxruntime"}

# `aunet-infer ... --save-video annotated.mp4` as H.264 (runtime/annotate.py imports av).
H264_VIDEO = {"av"}

NEEDS = {
    "trt-cu12": ENGINE_BUILD | ENGINE_RUNTIME,
    "trt-cu13": ENGINE_BUILD | ENGINE_RUNTIME,
    "trt": ENGINE_BUILD | ENGINE_RUNTIME,
    "trt-system": (ENGINE_BUILD | ENGINE_RUNTIME) - {"tensorrt"},  # TensorRT comes from JetPack / the container
    "export": FP16_CONVERSION,
    "video": H264_VIDEO,
    "dev": H264_VIDEO,  # the H.264 test runs in the suite, not skipped
}
TENSORRT_DIST = {"trt-cu12": {"tensorrt-cu12"}, "trt-cu13": {"tensorrt-cu13"}, "trt": {"tensorrt-cu12"},
                 "trt-system": set(), "export": set(), "video": set(), "dev": set()}


def project() -> dict:
    return tomllib.loads(PYPROJECT.read_text())["project"]


def requirements(extra: str, machine: str, seen: frozenset = frozenset()) -> dict[str, Requirement]:
    """{distribution: requirement} that ``pip install "aunet[extra]"`` asks for on ``machine``."""
    data = project()
    extras = data["optional-dependencies"]
    assert extra in extras, f"no extra {extra!r} in pyproject.toml"
    env = {**default_environment(), "platform_machine": machine, "extra": extra}
    out: dict[str, Requirement] = {}
    for line in extras[extra]:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        if req.name == data["name"]:
            for sub in sorted(req.extras - seen - {extra}):
                out.update(requirements(sub, machine, seen | {extra}))
            continue
        out[req.name.lower().replace("_", "-")] = req
    return out


@pytest.mark.parametrize("machine", MACHINES)
@pytest.mark.parametrize("extra", sorted(NEEDS))
def test_extra_brings_what_its_paths_import(extra, machine):
    dists = set(requirements(extra, machine))
    missing = sorted(name for name in NEEDS[extra] if not PROVIDERS[name] & dists)
    assert missing == [], f"aunet[{extra}] on {machine} lacks a distribution for: {', '.join(missing)}"


@pytest.mark.parametrize("machine", MACHINES)
@pytest.mark.parametrize("extra", sorted(NEEDS))
def test_tensorrt_comes_per_cuda_major_and_never_as_the_bare_package(extra, machine):
    dists = set(requirements(extra, machine))
    assert dists & PROVIDERS["tensorrt"] == TENSORRT_DIST[extra]  # bare `tensorrt` installs the CUDA 13 build


def test_one_onnxruntime_per_machine_so_extras_combine():
    for machine in MACHINES:
        for extra in NEEDS:
            runtimes = set(requirements(extra, machine)) & PROVIDERS["onnxruntime"]
            assert len(runtimes) <= 1, (extra, machine, runtimes)
        assert "onnxruntime-gpu" not in requirements("export", "aarch64")  # no aarch64 wheel of it on PyPI


@pytest.mark.parametrize("dist, extra, refused, admitted", [
    ("pycuda", "trt-cu12", ["2024.1"], ["2024.1.2", "2026.1"]),  # 2024.1 does not import under NumPy 2
    ("pycuda", "trt-system", ["2024.1"], ["2024.1.2"]),
    ("nvidia-modelopt", "export", ["0.31.0", "0.27.1"], ["0.33.0", "0.47.0"]),  # AutoCast's convert_to_mixed_precision
    ("tensorrt-cu12", "trt-cu12", ["8.6.1", "12.0.0"], ["10.0.1", "10.3.0", "11.4.0.106"]),
    ("tensorrt-cu13", "trt-cu13", ["12.0.0"], ["10.13.2.6", "11.4.0.106"]),
])
def test_version_floors(dist, extra, refused, admitted):
    spec = requirements(extra, "x86_64")[dist].specifier
    assert [v for v in refused if spec.contains(v, prereleases=True)] == []
    assert [v for v in admitted if not spec.contains(v, prereleases=True)] == []
