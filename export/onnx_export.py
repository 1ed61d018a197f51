"""AUNet -> ONNX: the inference graph only (eval mode, no stage hook, no losses), spec in the metadata.

Exporter: TorchScript-based ``torch.onnx.export(..., dynamo=False)``. The model has no
``nn.TransformerEncoderLayer`` fast path to dodge (aunet/art.py writes attention out), so the tracer sees
plain ops; ``dynamic_axes`` makes the batch symbolic and the traced graph has no data-dependent control
flow, so one trace is exact for every batch. The dynamo exporter is newer but slower and its ONNX
node names do not keep the module scopes (``/encoders.0/importance/...``) that the FP16 conversion uses to
keep the AU-importance normalization in float32.
"""
from __future__ import annotations

import os
import platform
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aunet.artifacts import ExportError, check_and_save_onnx, file_sha256, write_onnx_spec
from aunet.spec import OUTPUT_NAMES, ModelSpec, SpecError

if TYPE_CHECKING:  # pragma: no cover
    import onnx
    import torch

DEFAULT_OPSET = 17  # the first opset with LayerNormalization; TensorRT 10/11 and ORT >= 1.14 parse it
BATCH_DIM = "batch"


def exporter_versions() -> dict[str, str]:
    import onnx
    import torch

    import aunet

    versions = {"aunet": aunet.__version__, "torch": torch.__version__, "onnx": onnx.__version__,
                "python": platform.python_version()}
    try:
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    try:
        import onnxslim

        versions["onnxslim"] = onnxslim.__version__
    except ImportError:
        pass
    return versions


def spec_for_model(model: "torch.nn.Module", *, checkpoint: str | os.PathLike | None = None, **provenance: Any) -> ModelSpec:
    """The spec of an AUNet: its config, the shared crop/IO contract, and where the artifact came from (the
    checkpoint and its hash, the exporter's versions, and where the backbone's initial weights came from: a file
    and its sha256, timm's hub, or random init)."""
    prov: dict[str, Any] = {"precision": "fp32", "versions": exporter_versions(),
                            "backbone": dict(getattr(model, "backbone_provenance", None) or {"source": "unknown"}),
                            **provenance}
    if checkpoint is not None:
        prov["checkpoint"] = Path(checkpoint).name
        prov["checkpoint_sha256"] = file_sha256(checkpoint)
    return ModelSpec.from_config(model.cfg, provenance=prov)


def _graph_io_dims(model: "onnx.ModelProto") -> dict[str, list[Any]]:
    dims = {}
    for vi in list(model.graph.input) + list(model.graph.output):
        dims[vi.name] = [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]
    return dims


def export_onnx(
    model: "torch.nn.Module",
    out_path: str | os.PathLike,
    *,
    spec: ModelSpec | None = None,
    opset: int = DEFAULT_OPSET,
    simplify: bool = True,
) -> Path:
    """Write the inference graph of ``model`` to ``out_path`` (atomically) and return the path.

    Input ``image`` [B, 3, S, S] float32 RGB in [0, 1]; outputs ``cls_logits`` [B, 2], ``patch_logits``
    [B, n, 2], ``score`` [B]; B is dynamic. The spec JSON (``spec`` or one built from the model) is stored in
    ``metadata_props`` under ``aunet.spec``; its provenance records the opset and the exporter versions.
    """
    import io

    import onnx
    import torch

    cfg = model.cfg
    spec = spec or spec_for_model(model)
    spec = spec.with_provenance(opset=opset, exporter="torch.onnx (TorchScript, dynamo=False)",
                                simplified_with="onnxslim" if simplify else None)
    if spec.input_size != cfg.img_size or spec.model["num_aus"] != cfg.num_aus:
        raise SpecError(f"the spec describes another model ({spec.model.get('name')!r}, {spec.input_size}px)")

    class InferenceGraph(torch.nn.Module):
        """Only the three deployed outputs; the AU maps and the stage hook are training-time."""

        def __init__(self, net: torch.nn.Module):
            super().__init__()
            self.net = net

        def forward(self, image: torch.Tensor):
            out = self.net(image)
            return out.cls_logits, out.patch_logits, out.score

    was_training = model.training
    model.eval()  # BatchNorm running statistics, no dropout
    buf = io.BytesIO()
    try:
        # The model's input-shape guard traces to a constant: right, since only the batch is dynamic.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript path is chosen, see above
            sample = torch.rand(2, 3, cfg.img_size, cfg.img_size)
            torch.onnx.export(
                InferenceGraph(model), (sample,), buf, dynamo=False, opset_version=opset,
                input_names=[spec.input_name], output_names=list(OUTPUT_NAMES),
                dynamic_axes={name: {0: BATCH_DIM} for name in (spec.input_name, *OUTPUT_NAMES)},
                do_constant_folding=True,
            )
    except Exception as exc:  # the exporter raises many types; the artifact is simply not written
        raise ExportError(f"torch.onnx.export failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    finally:
        model.train(was_training)

    proto = onnx.load_from_string(buf.getvalue())
    if simplify:
        import onnxslim

        proto = onnxslim.slim(proto)
    proto = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    dims = _graph_io_dims(proto)
    expected = {spec.input_name: [BATCH_DIM, 3, cfg.img_size, cfg.img_size], "cls_logits": [BATCH_DIM, 2],
                "patch_logits": [BATCH_DIM, cfg.num_patches, 2], "score": [BATCH_DIM]}
    if dims != expected:
        raise ExportError(f"exported graph I/O {dims} != expected {expected}")
    proto.producer_name, proto.doc_string = "aunet-export", f"AUNet ({cfg.name}) inference graph"
    write_onnx_spec(proto, spec)
    return check_and_save_onnx(proto, out_path)


__all__ = ["DEFAULT_OPSET", "export_onnx", "exporter_versions", "spec_for_model"]
