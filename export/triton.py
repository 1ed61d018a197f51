"""A Triton Inference Server model repository for an exported model (ONNX or TensorRT engine).

    <out>/<name>/config.pbtxt
    <out>/<name>/1/model.onnx | model.plan   (+ model.plan.json, the spec sidecar)

Dims in config.pbtxt exclude the batch dimension (max_batch_size > 0 makes Triton add it); ``score`` is [B],
so it is declared as dims [1] reshaped to [] (Triton needs at least one dim). A .plan must come from the same
TensorRT version as the Triton container's (see its release notes) and the serving GPU.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from aunet.io import atomic_path, atomic_write_text
from aunet.backends import ENGINE_SUFFIXES, read_plan_sidecar, read_spec, sidecar_path
from aunet.spec import ModelSpec

PLATFORMS = {".onnx": ("onnxruntime_onnx", "model.onnx"), ".plan": ("tensorrt_plan", "model.plan"),
             ".engine": ("tensorrt_plan", "model.plan")}
# The model name is the folder Triton loads and is quoted in config.pbtxt: one plain path component.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _tensor(name: str, dims: list[int], reshape: list[int] | None = None) -> str:
    lines = ["  {", f'    name: "{name}"', "    data_type: TYPE_FP32", f"    dims: [ {', '.join(map(str, dims))} ]"]
    if reshape is not None:
        lines.append(f"    reshape: {{ shape: [ {', '.join(map(str, reshape))} ] }}")
    return "\n".join(lines + ["  }"])


def config_pbtxt(spec: ModelSpec, name: str, platform: str, max_batch: int, queue_delay_us: int = 500,
                 instances: int = 1) -> str:
    s, n = spec.input_size, spec.num_patches
    preferred = sorted({b for b in (1, 4, 8, 16, 32) if b <= max_batch} | {max_batch})
    outputs = {"cls_logits": _tensor("cls_logits", [2]), "patch_logits": _tensor("patch_logits", [n, 2]),
               "score": _tensor("score", [1], reshape=[])}
    return "\n".join([
        f'name: "{name}"',
        f'platform: "{platform}"',
        f"max_batch_size: {max_batch}",
        "input [",
        _tensor(spec.input_name, [3, s, s]),
        "]",
        "output [",
        ",\n".join(outputs[o] for o in spec.output_names),
        "]",
        "dynamic_batching {",
        f"  preferred_batch_size: [ {', '.join(map(str, preferred))} ]",
        f"  max_queue_delay_microseconds: {queue_delay_us}",
        "}",
        f"instance_group [ {{ count: {instances} kind: {'KIND_GPU' if platform == 'tensorrt_plan' else 'KIND_AUTO'} }} ]",
        "parameters {",
        '  key: "aunet.threshold"',
        f'  value: {{ string_value: "{spec.threshold}" }}',
        "}",
        "",
    ])


def write_repository(model_path: str | os.PathLike, out_dir: str | os.PathLike, *, name: str = "aunet",
                     max_batch: int | None = None, queue_delay_us: int = 500, version: int = 1) -> Path:
    """Write ``<out_dir>/<name>/`` for ``model_path``; returns the config.pbtxt path."""
    if not MODEL_NAME.fullmatch(name):
        raise ValueError(f"model name {name!r}: use letters, digits, '_', '.', '-' (it names the repository folder)")
    model_path = Path(model_path)
    suffix = model_path.suffix.lower()
    spec = read_spec(model_path)  # refuses a file without an aunet spec
    platform, filename = PLATFORMS[suffix]
    if suffix in ENGINE_SUFFIXES:
        profile = read_plan_sidecar(model_path).get("profile")
        if not profile:  # a sidecar written for an engine built elsewhere, where its profile could not be read
            if max_batch is None:
                raise ValueError(f"{model_path.name}'s sidecar does not record its batch profile: give --max-batch "
                                 "(at most the engine's profile maximum)")
            profile = {"max": max_batch}
        engine_max = int(profile["max"])
        if max_batch is not None and max_batch > engine_max:
            raise ValueError(f"--max-batch {max_batch} exceeds the engine's profile maximum {engine_max}")
        max_batch = max_batch or engine_max
    max_batch = max_batch or 32
    if max_batch < 1:
        raise ValueError("max_batch must be >= 1")
    model_dir = Path(out_dir) / name
    version_dir = model_dir / str(version)
    with atomic_path(version_dir / filename) as tmp:
        shutil.copyfile(model_path, tmp)
    if suffix in ENGINE_SUFFIXES:
        with atomic_path(sidecar_path(version_dir / filename)) as tmp:
            shutil.copyfile(sidecar_path(model_path), tmp)
    config = model_dir / "config.pbtxt"
    atomic_write_text(config, config_pbtxt(spec, name, platform, max_batch, queue_delay_us))
    return config


__all__ = ["config_pbtxt", "write_repository"]
