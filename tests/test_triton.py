"""`aunet-export triton`: a model repository whose config.pbtxt is valid for Triton and matches the model's spec.

Every config is read back with protobuf's text-format parser into Triton's own ``ModelConfig`` message
(tritonclient's ``model_config_pb2``), so an unknown field or a misspelled enum fails as it would in the server.
"""
import json

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2  # Triton's config schema (the dev extra's tritonclient[grpc])
from tritonclient.utils import np_to_triton_dtype
from typer.testing import CliRunner

from aunet.config import ModelConfig
from aunet.spec import ModelSpec

SPEC = ModelSpec.from_config(ModelConfig.named("small"), provenance={"precision": "fp16"})
S, N = SPEC.input_size, SPEC.num_patches  # 112, 49


def read_config(path):
    """config.pbtxt -> Triton's ModelConfig; text_format.ParseError on anything the schema does not know."""
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def dtype(tensor):
    return model_config_pb2.DataType.Name(tensor.data_type)


def served_shape(tensor):
    """The model-side shape Triton expects for a tensor of a batching model: the batch, then reshape if set, else dims."""
    return [-1] + list(tensor.reshape.shape if tensor.HasField("reshape") else tensor.dims)


def check_config(cfg, *, name, platform, max_batch, preferred, kind):
    """What every repository config must say for SPEC."""
    assert cfg.name == name and cfg.platform == platform and not cfg.backend
    assert cfg.max_batch_size == max_batch
    # Dims exclude the batch dimension: Triton prepends it because max_batch_size > 0.
    assert [(t.name, dtype(t), list(t.dims), t.HasField("reshape")) for t in cfg.input] == [
        ("image", "TYPE_FP32", [3, S, S], False)]
    assert [(t.name, dtype(t), list(t.dims)) for t in cfg.output] == [
        ("cls_logits", "TYPE_FP32", [2]), ("patch_logits", "TYPE_FP32", [N, 2]), ("score", "TYPE_FP32", [1])]
    # score is [B] in the model: Triton needs one dim, so [1] reshaped to [] (an empty reshape that is present).
    assert [t.HasField("reshape") for t in cfg.output] == [False, False, True]
    assert [served_shape(t) for t in cfg.output] == [[-1, 2], [-1, N, 2], [-1]]
    assert cfg.WhichOneof("scheduling_choice") == "dynamic_batching"
    assert list(cfg.dynamic_batching.preferred_batch_size) == preferred
    assert max(preferred) == max_batch
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 500
    assert [(g.count, model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind)) for g in cfg.instance_group] == [(1, kind)]
    assert dict(cfg.parameters) == {"aunet.threshold": model_config_pb2.ModelParameter(string_value=str(SPEC.threshold))}


def fake_engine(folder, max_batch=16):
    plan = folder / "model.fp16.plan"
    plan.write_bytes(b"engine bytes")
    (folder / "model.fp16.plan.json").write_text(json.dumps({
        "format": "aunet-plan", "spec": SPEC.to_dict(), "precision": "fp16", "tensorrt": "10.3.0",
        "gpu": {"name": "NVIDIA L4", "compute_capability": "8.9"},
        "profile": {"input": "image", "min": 1, "opt": 8, "max": max_batch}}))
    return plan


def spec_onnx(folder):
    """A small ONNX with the real I/O of an exported AUNet (names, float32, [B,3,S,S] -> [B,2], [B,n,2], [B])."""
    pytest.importorskip("onnx")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from aunet.artifacts import check_and_save_onnx, write_onnx_spec

    consts = {"starts": [0], "ends": [2], "axes": [1], "unsq": [1], "expand": [1, N, 1]}
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["pooled"], axes=[2, 3], keepdims=0),  # [B, 3]
        helper.make_node("Slice", ["pooled", "starts", "ends", "axes"], ["cls_logits"]),  # [B, 2]
        helper.make_node("Unsqueeze", ["cls_logits", "unsq"], ["cls_1"]),  # [B, 1, 2]
        helper.make_node("Expand", ["cls_1", "expand"], ["patch_logits"]),  # [B, n, 2]
        helper.make_node("ReduceMean", ["pooled"], ["score"], axes=[1], keepdims=0),  # [B]
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, S, S])],
        [helper.make_tensor_value_info("cls_logits", TensorProto.FLOAT, ["batch", 2]),
         helper.make_tensor_value_info("patch_logits", TensorProto.FLOAT, ["batch", N, 2]),
         helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])],
        [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    write_onnx_spec(model, SPEC)
    return check_and_save_onnx(model, folder / "model.fp16.onnx")


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
    # max_batch_size: the engine's profile maximum.
    check_config(read_config(model_dir / "config.pbtxt"), name="aunet_fp16", platform="tensorrt_plan",
                 max_batch=16, preferred=[1, 4, 8, 16], kind="KIND_GPU")


def test_engine_batch_limit_is_enforced(tmp_path):
    plan = fake_engine(tmp_path, max_batch=8)
    result = run_cli("triton", "--model", plan, "--out", tmp_path / "repo", "--max-batch", 64)
    assert result.exit_code == 2 and "exceeds the engine's profile maximum 8" in result.output
    assert result.stderr.startswith("aunet-export: error: ") and result.stderr.count("\n") == 1
    assert not (tmp_path / "repo").exists()
    result = run_cli("triton", "--model", plan, "--out", tmp_path / "repo", "--max-batch", 6)
    assert result.exit_code == 0, result.output
    check_config(read_config(tmp_path / "repo" / "aunet" / "config.pbtxt"), name="aunet", platform="tensorrt_plan",
                 max_batch=6, preferred=[1, 4, 6], kind="KIND_GPU")


def test_engine_built_elsewhere_needs_max_batch(tmp_path):
    """A sidecar written by `aunet-export sidecar` where TensorRT is absent has no profile: --max-batch is asked
    for in one line, and then used."""
    plan = fake_engine(tmp_path)
    sidecar = json.loads((tmp_path / "model.fp16.plan.json").read_text())
    del sidecar["profile"]
    (tmp_path / "model.fp16.plan.json").write_text(json.dumps({**sidecar, "built_by": "external"}))
    result = run_cli("triton", "--model", plan, "--out", tmp_path / "repo")
    assert result.exit_code == 2 and "give --max-batch" in result.stderr, result.output
    assert result.stderr.startswith("aunet-export: error: ") and result.stderr.count("\n") == 1
    assert not (tmp_path / "repo").exists()
    result = run_cli("triton", "--model", plan, "--out", tmp_path / "repo", "--max-batch", 8)
    assert result.exit_code == 0, result.output
    check_config(read_config(tmp_path / "repo" / "aunet" / "config.pbtxt"), name="aunet", platform="tensorrt_plan",
                 max_batch=8, preferred=[1, 4, 8], kind="KIND_GPU")

def test_onnx_repository_matches_the_graph(tmp_path):
    path = spec_onnx(tmp_path)  # skips without onnx
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    result = run_cli("triton", "--model", path, "--out", tmp_path / "repo")
    assert result.exit_code == 0, result.output
    cfg = read_config(tmp_path / "repo" / "aunet" / "config.pbtxt")
    check_config(cfg, name="aunet", platform="onnxruntime_onnx", max_batch=32, preferred=[1, 4, 8, 16, 32],
                 kind="KIND_AUTO")
    served = onnx.load(str(tmp_path / "repo" / "aunet" / "1" / "model.onnx"))
    assert served.metadata_props[0].key == "aunet.spec"

    # What Triton's ONNX Runtime backend checks at load: every config tensor exists in the graph with that
    # data type and, with the batch dimension put back, that shape (a symbolic dim is -1).
    def graph_tensors(values):
        return {v.name: ("TYPE_" + np_to_triton_dtype(tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)),
                         [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim])
                for v in values}

    def config_tensors(tensors):
        return {t.name: (dtype(t), served_shape(t)) for t in tensors}

    assert config_tensors(cfg.input) == graph_tensors(served.graph.input)
    assert config_tensors(cfg.output) == graph_tensors(served.graph.output)


@pytest.mark.parametrize("good, bad, named", [
    ("data_type: TYPE_FP32", "data_type: TYPE_FLOAT32", "TYPE_FLOAT32"),  # a misspelled DataType enum value
    ("kind: KIND_GPU", "kind: KIND_GPUS", "KIND_GPUS"),  # a misspelled instance kind
    ("max_batch_size:", "max_batch:", "max_batch"),  # an unknown field
    ("dynamic_batching {", "dynamic_batch {", "dynamic_batch"),  # an unknown message field
])
def test_a_corrupted_config_is_rejected_by_the_schema(tmp_path, good, bad, named):
    result = run_cli("triton", "--model", fake_engine(tmp_path), "--out", tmp_path / "repo")
    assert result.exit_code == 0, result.output
    config = tmp_path / "repo" / "aunet" / "config.pbtxt"
    read_config(config)  # the config as written parses
    text = config.read_text()
    assert good in text
    config.write_text(text.replace(good, bad, 1))
    with pytest.raises(text_format.ParseError, match=rf"named \"?{named}\b"):
        read_config(config)


@pytest.mark.parametrize("name", ['a"b', "../up", "two/levels", "", ".hidden"])
def test_model_name_must_be_one_plain_folder(tmp_path, name):
    result = run_cli("triton", "--model", fake_engine(tmp_path), "--out", tmp_path / "repo", "--name", name)
    assert result.exit_code == 2 and "model name" in result.output
    assert result.stderr.startswith("aunet-export: error: ") and result.stderr.count("\n") == 1
    assert not (tmp_path / "repo").exists() and not (tmp_path / "up").exists()


def test_missing_or_foreign_model(tmp_path):
    r = run_cli("triton", "--model", tmp_path / "none.plan", "--out", tmp_path / "repo")
    assert r.exit_code == 2 and "not found" in r.output
    assert r.stderr.startswith("aunet-export: error: ") and r.stderr.count("\n") == 1
    (tmp_path / "x.plan").write_bytes(b"x")
    r = run_cli("triton", "--model", tmp_path / "x.plan", "--out", tmp_path / "repo")
    assert r.exit_code == 2 and "sidecar" in r.output and "Traceback" not in r.output
    assert r.stderr.startswith("aunet-export: error: ") and r.stderr.count("\n") == 1
