"""`aunet-export triton`: a model repository whose config.pbtxt matches the model's spec."""
import json
import re

import pytest
from typer.testing import CliRunner

from aunet.config import ModelConfig
from aunet.spec import ModelSpec

SPEC = ModelSpec.from_config(ModelConfig.named("small"), provenance={"precision": "fp16"})

TOKEN = re.compile(r'\s*(?:(#[^\n]*)|([{}\[\]:,])|("(?:[^"\\]|\\.)*")|([^\s{}\[\]:,"]+))')


def parse_pbtxt(text):
    """Protobuf text format -> dict (repeated fields -> lists): enough to read a Triton config back."""
    tokens = [m.group(2) or m.group(3) or m.group(4) for m in TOKEN.finditer(text) if not m.group(1)]
    tokens = [t for t in tokens if t is not None]
    pos = 0

    def scalar(tok):
        if tok.startswith('"'):
            return json.loads(tok)
        try:
            return int(tok)
        except ValueError:
            try:
                return float(tok)
            except ValueError:
                return tok  # enum

    def value():
        nonlocal pos
        tok = tokens[pos]
        pos += 1
        if tok == "{":
            return message("}")
        if tok == "[":
            items = []
            while tokens[pos] != "]":
                items.append(value())
                if tokens[pos] == ",":
                    pos += 1
            pos += 1
            return items
        return scalar(tok)

    def message(end):
        nonlocal pos
        out = {}
        while pos < len(tokens) and tokens[pos] != end:
            key = tokens[pos]
            pos += 1
            if tokens[pos] == ":":
                pos += 1
            v = value()
            if key in out:
                out[key] = (out[key] if isinstance(out[key], list) else [out[key]]) + (v if isinstance(v, list) else [v])
            else:
                out[key] = v
        pos += 1
        return out

    return message(None)


def fake_engine(folder, max_batch=16):
    plan = folder / "model.fp16.plan"
    plan.write_bytes(b"engine bytes")
    (folder / "model.fp16.plan.json").write_text(json.dumps({
        "format": "aunet-plan", "spec": SPEC.to_dict(), "precision": "fp16", "tensorrt": "10.3.0",
        "gpu": {"name": "NVIDIA L4", "compute_capability": "8.9"},
        "profile": {"input": "image", "min": 1, "opt": 8, "max": max_batch}}))
    return plan


def run_cli(*args):
    from aunet.export.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_engine_repository_config_matches_the_spec(tmp_path):
    plan = fake_engine(tmp_path)
    result = run_cli("triton", "--model", plan, "--out", tmp_path / "repo", "--name", "aunet_fp16")
    assert result.exit_code == 0, result.output
    model_dir = tmp_path / "repo" / "aunet_fp16"
    assert (model_dir / "1" / "model.plan").read_bytes() == b"engine bytes"
    assert ModelSpec.from_dict(json.loads((model_dir / "1" / "model.plan.json").read_text())["spec"]) == SPEC
    cfg = parse_pbtxt((model_dir / "config.pbtxt").read_text())
    assert cfg["name"] == "aunet_fp16" and cfg["platform"] == "tensorrt_plan"
    assert cfg["max_batch_size"] == 16  # the engine's profile maximum
    (inp,) = cfg["input"]
    assert inp == {"name": "image", "data_type": "TYPE_FP32", "dims": [3, 112, 112]}
    outputs = {o["name"]: o for o in cfg["output"]}
    assert list(outputs) == ["cls_logits", "patch_logits", "score"]
    assert outputs["cls_logits"]["dims"] == [2] and outputs["patch_logits"]["dims"] == [49, 2]
    assert outputs["score"]["dims"] == [1] and outputs["score"]["reshape"] == {"shape": []}
    assert all(o["data_type"] == "TYPE_FP32" for o in outputs.values())
    batching = cfg["dynamic_batching"]
    assert batching["preferred_batch_size"] == [1, 4, 8, 16] and batching["max_queue_delay_microseconds"] == 500
    assert cfg["instance_group"] == [{"count": 1, "kind": "KIND_GPU"}]


def test_engine_batch_limit_is_enforced(tmp_path):
    plan = fake_engine(tmp_path, max_batch=8)
    result = run_cli("triton", "--model", plan, "--out", tmp_path / "repo", "--max-batch", 64)
    assert result.exit_code == 2 and "exceeds the engine's profile maximum 8" in result.output
    assert result.stderr.startswith("aunet-export: error: ") and result.stderr.count("\n") == 1
    assert not (tmp_path / "repo").exists()


def test_onnx_repository(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from aunet.artifacts import check_and_save_onnx, write_onnx_spec

    # Any graph with the spec in its metadata: the repository writer reads only the spec and copies the file.
    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["score"])], "g",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch"])],
                              [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    write_onnx_spec(model, SPEC)
    path = check_and_save_onnx(model, tmp_path / "model.fp16.onnx")
    result = run_cli("triton", "--model", path, "--out", tmp_path / "repo")
    assert result.exit_code == 0, result.output
    cfg = parse_pbtxt((tmp_path / "repo" / "aunet" / "config.pbtxt").read_text())
    assert cfg["platform"] == "onnxruntime_onnx" and cfg["max_batch_size"] == 32
    assert onnx.load(str(tmp_path / "repo" / "aunet" / "1" / "model.onnx")).metadata_props[0].key == "aunet.spec"


def test_missing_or_foreign_model(tmp_path):
    r = run_cli("triton", "--model", tmp_path / "none.plan", "--out", tmp_path / "repo")
    assert r.exit_code == 2 and "not found" in r.output
    assert r.stderr.startswith("aunet-export: error: ") and r.stderr.count("\n") == 1
    (tmp_path / "x.plan").write_bytes(b"x")
    r = run_cli("triton", "--model", tmp_path / "x.plan", "--out", tmp_path / "repo")
    assert r.exit_code == 2 and "sidecar" in r.output and "Traceback" not in r.output
    assert r.stderr.startswith("aunet-export: error: ") and r.stderr.count("\n") == 1
