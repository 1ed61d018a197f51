"""The spec inside ONNX artifacts: written into and read from ``metadata_props``, checked, saved atomically.

Torch-free and shared by every room that writes an ONNX (export, calibration, the detector export); the
runtime reads specs through ``aunet.backends.read_spec``."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from aunet.io import atomic_path
from aunet.spec import METADATA_KEY, ModelSpec, SpecError

if TYPE_CHECKING:  # pragma: no cover
    import onnx


class ExportError(RuntimeError):
    """An export step failed (exporter, simplifier, checker): the artifact was not written."""


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_onnx_spec(model: "onnx.ModelProto") -> ModelSpec:
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return ModelSpec.from_json(prop.value)
    raise SpecError(f"the ONNX has no {METADATA_KEY!r} metadata: it was not exported by aunet-export")


def write_onnx_spec(model: "onnx.ModelProto", spec: ModelSpec) -> None:
    """Set (or replace) the spec JSON in ``metadata_props``."""
    for i in reversed(range(len(model.metadata_props))):
        if model.metadata_props[i].key == METADATA_KEY:
            del model.metadata_props[i]
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, spec.to_json()


def check_and_save_onnx(model: "onnx.ModelProto", out_path: str | os.PathLike) -> Path:
    """Full onnx.checker (with strict shape inference), then an atomic write."""
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"ONNX checker: {str(exc).splitlines()[0]}") from None
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        onnx.save(model, str(tmp))
    return out_path
