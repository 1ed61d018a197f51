"""aunet-serve against the real Triton server PyTriton bundles, and the client (aunet.runtime.client).

The server tests need PyTriton, which pins numpy<2 while the main venv's OpenCV needs numpy>=2: they run in the
serve venv (`make test-serve`) and skip elsewhere with the reason printed. The wire-protocol tests run in both.

The model is a tiny ONNX with AUNet's I/O contract and spec, built with onnx.helper (test_backends.plumbing_onnx):
the serve venv has no torch to export the real network, and nothing the server adds (transport, batching,
detection, crops, padding) depends on the network's weights. Servers bind to 127.0.0.1 on free ports; every wait
is bounded.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from aunet.runtime.client import (
    AFFINES,
    FACE_COUNT,
    SCORES,
    frame_from_outputs,
    frame_outputs,
    parse_server_url,
    server_message,
)
from aunet.runtime.results import FaceResult, FrameResult

# --- the wire protocol (any venv) ---------------------------------------------------------------------------------


def _face(k: int) -> FaceResult:
    rng = np.random.default_rng(k)
    return FaceResult(box=rng.uniform(0, 300, 4).astype(np.float32), detector_score=float(rng.uniform(0, 2)),
                      score=float(np.float32(rng.uniform())), region_map=rng.uniform(size=(7, 7)).astype(np.float16),
                      affine=rng.normal(size=(2, 3)) * 100)


def test_frames_travel_through_the_protocol_unchanged():
    frames = [FrameResult(0, 0.0, [_face(1), _face(2)]), FrameResult(1, 0.1, []), FrameResult(2, 0.2, [_face(3)])]
    out = frame_outputs(frames, (7, 7))
    assert out[FACE_COUNT].ravel().tolist() == [2, 0, 1]
    assert out[SCORES].shape == (3, 2) and out[AFFINES].dtype == np.float64
    for row, frame in enumerate(frames):
        back = frame_from_outputs(out, row, frame.index, frame.time_s)
        assert back.to_dict() == frame.to_dict()
        for a, b in zip(back.faces, frame.faces, strict=True):
            assert np.array_equal(a.region_map, b.region_map) and np.array_equal(a.affine, b.affine)


def test_a_request_without_faces_still_has_a_face_slot():
    """PyTriton cannot move a zero-size tensor: a batch without faces pads one slot, face_count says 0."""
    out = frame_outputs([FrameResult(0, 0.0, [])], (7, 7))
    assert out[SCORES].shape == (1, 1) and out[FACE_COUNT].tolist() == [[0]]
    assert frame_from_outputs(out, 0, 0, 0.0).faces == []


@pytest.mark.parametrize("url, expected", [
    ("grpc://127.0.0.1:9001", ("grpc", "127.0.0.1:9001")),
    ("http://localhost", ("http", "localhost:8000")),
    ("127.0.0.1:18000", ("http", "127.0.0.1:18000")),
    ("grpc://[::1]:8001", ("grpc", "[::1]:8001")),
])
def test_server_urls(url, expected):
    assert parse_server_url(url) == expected


@pytest.mark.parametrize("url", ["ftp://host:1", "http://host:1/v2/models", "grpc://:8001", "http://host:port"])
def test_bad_server_urls_are_refused(url):
    with pytest.raises(ValueError, match="server URL"):
        parse_server_url(url)


def test_server_messages_are_cut_to_the_error_line():
    wrapped = ("Failed to process the request(s) for model 'aunet_frames_0_0', message: TritonModelException: Model "
               "execute error: Traceback (most recent call last):\n  File \"model.py\", line 492, in execute\n    raise "
               "x\nc_python_backend_utils.TritonModelException: aunet.serve.server.RequestError: frame of 1x10000 px: "
               "each side must be 16 to 8192 px\n\n\n\nAt:\n  model.py(501): execute\n")
    assert server_message(wrapped) == "frame of 1x10000 px: each side must be 16 to 8192 px"
    other = wrapped.replace("aunet.serve.server.RequestError", "builtins.TypeError")
    assert server_message(other) == "TypeError: frame of 1x10000 px: each side must be 16 to 8192 px"
    plain = "[request id: <id_unknown>] inference request batch-size must be <= 32 for 'aunet_faces'"
    assert server_message(plain) == plain


@pytest.mark.parametrize("args, says", [
    (["--server", "grpc://127.0.0.1:1", "--engine", "m.onnx"], "--engine and --server are mutually exclusive"),
    (["--server", "grpc://127.0.0.1:1", "--detector", "d.onnx"], "--server and --detector are mutually exclusive"),
    ([], "give the model: --engine MODEL, or --server URL"),
    (["--server", "ftp://127.0.0.1:1"], "server URL 'ftp://127.0.0.1:1': use http://HOST:PORT or grpc://HOST:PORT"),
])
def test_aunet_infer_server_usage_errors(args, says, tmp_path, capsys):
    from aunet.runtime.cli import main

    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"x")
    with pytest.raises(SystemExit) as exit_:
        main([str(clip), *args, "--quiet"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("aunet-infer: error: ") and says in err, err
    assert len(err.strip().splitlines()) == 1


def test_aunet_serve_without_pytriton_exits_3(tmp_path):
    try:
        import pytriton  # noqa: F401
        pytest.skip("PyTriton is installed here")
    except ImportError:
        pass
    model = tmp_path / "model.onnx"
    model.write_bytes(b"x")
    res = subprocess.run([sys.executable, "-m", "aunet.serve.cli", "--engine", str(model)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 3
    assert res.stderr.startswith("aunet-serve: error: aunet-serve needs PyTriton") and len(res.stderr.splitlines()) == 1


# --- the real server (serve venv) ---------------------------------------------------------------------------------


def _needs_pytriton():
    pytest.importorskip("pytriton", reason="aunet-serve needs PyTriton, which pins numpy<2: run `make test-serve` "
                                           "(a venv of its own)")
    pytest.importorskip("onnx")
    pytest.importorskip("tritonclient.http")
    pytest.importorskip("tritonclient.grpc")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    _needs_pytriton()
    from test_backends import SMALL, plumbing_onnx

    from aunet.spec import ModelSpec

    return plumbing_onnx(tmp_path_factory.mktemp("serve") / "plumbing.onnx",
                         ModelSpec.from_config(SMALL, provenance={"precision": "fp32"}))


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    from aunet.demo.sample_data import make_sample_video

    return make_sample_video(tmp_path_factory.mktemp("serve-video") / "face.mp4", frames=6, fps=10.0,
                             size=(480, 360))


@pytest.fixture(scope="module")
def local(model):
    from aunet.runtime import Detector

    with Detector(model, device="cpu", batch_size=32) as d:
        yield d


@pytest.fixture(scope="module")
def server(model, tmp_path_factory):
    from aunet.serve.process import ServerProcess

    with ServerProcess(model, tmp_path_factory.mktemp("server"), "--max-batch", "32",
                       "--frames-max-batch", "8") as s:
        yield s


def _stderr_lines(server) -> list[str]:
    """What aunet-serve itself wrote (Triton's own log goes to stdout)."""
    return [line for line in server.stderr().splitlines() if line.strip()]


def test_ready_healthy_and_metrics(server):
    from aunet.serve.process import http_status

    base = server.urls["http"]
    assert http_status(base + "/v2/health/live") == 200
    assert http_status(base + "/v2/health/ready") == 200
    for name in ("aunet_faces", "aunet_frames", "aunet_info"):
        assert http_status(f"{base}/v2/models/{name}/ready") == 200
    assert http_status(f"{base}/v2/models/aunet_missing/ready") != 200
    assert ("nv_inference_count", "aunet_faces") in server.metrics()
    with urllib.request.urlopen(base + "/v2/models/aunet_faces/config", timeout=5) as r:
        config = json.loads(r.read())
    assert config["max_batch_size"] == 32 and "dynamic_batching" in config


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_faces_model_answers_as_the_local_detector(server, local, protocol):
    from aunet.runtime.client import RemoteDetector

    crops = np.random.default_rng(0).integers(0, 256, (40, 112, 112, 3), dtype=np.uint8)  # > one batch of 32
    with RemoteDetector(server.urls[protocol]) as remote:
        assert remote.spec == local.spec and remote.threshold == local.threshold
        got, want = remote.predict_faces(crops), local.predict_faces(crops)
    assert np.array_equal(got.scores, want.scores)
    assert np.array_equal(got.region_maps, want.region_maps)


def test_frames_model_answers_a_video_as_the_local_detector(server, local, video):
    from aunet.demo.sample_data import no_face_image
    from aunet.runtime.client import RemoteDetector

    with RemoteDetector(server.urls["grpc"]) as remote:
        got = remote.predict_video(video).to_dict()
        empty = remote.predict_frame(np.ascontiguousarray(no_face_image()[:240, :320]))
    want = local.predict_video(video).to_dict()
    assert got["frames_with_face"] == want["frames_with_face"] > 0
    for record in (got, want):
        del record["timings"]
    assert got.pop("backend") == f"{want.pop('backend')} via {server.urls['grpc']}"
    assert json.dumps(got) == json.dumps(want)  # the JSON aunet-infer would write, key order included
    assert empty.faces == []


def test_aunet_infer_with_server_writes_the_local_json(server, model, video, tmp_path):
    runs = {}
    for how, args in (("server", ["--server", server.urls["http"]]), ("local", ["--engine", str(model), "--batch", "32"])):
        out = tmp_path / f"{how}.json"
        res = subprocess.run([sys.executable, "-m", "aunet.runtime.cli", str(video), *args, "--out", str(out),
                              "--quiet"], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        runs[how] = json.loads(out.read_text())
    for record in runs.values():
        del record["timings"], record["backend"]
    assert runs["server"] == runs["local"]


def test_aunet_infer_refuses_a_url_where_no_server_answers(video):
    pytest.importorskip("tritonclient.grpc")
    from aunet.serve.server import free_port

    res = subprocess.run([sys.executable, "-m", "aunet.runtime.cli", str(video), "--server",
                          f"grpc://127.0.0.1:{free_port()}", "--quiet"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert res.stderr.startswith("aunet-infer: error: no aunet-serve answers at grpc://127.0.0.1:")
    assert len(res.stderr.strip().splitlines()) == 1


def test_bad_requests_get_errors_and_the_server_keeps_serving(server):
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    client = httpclient.InferenceServerClient(server.urls["http"].split("://")[1])

    def call(model, name, array, dtype="UINT8"):
        t = httpclient.InferInput(name, list(array.shape), dtype)
        t.set_data_from_numpy(array, binary_data=True)
        return client.infer(model, [t])

    bad = [
        ("aunet_faces", "crop", np.zeros((1, 112, 112, 3), np.uint8), "UINT8", "unexpected inference input"),
        ("aunet_faces", "crops", np.zeros((1, 112, 112, 3), np.float32), "FP32", "data-type"),
        ("aunet_faces", "crops", np.zeros((1, 100, 112, 3), np.uint8), "UINT8", "unexpected shape"),
        ("aunet_faces", "crops", np.zeros((33, 112, 112, 3), np.uint8), "UINT8", "batch-size must be <= 32"),
        ("aunet_frames", "frame", np.zeros((9, 64, 64, 3), np.uint8), "UINT8", "batch-size must be <= 8"),
        ("aunet_frames", "frame", np.zeros((1, 0, 0, 3), np.uint8), "UINT8", ""),
        ("aunet_frames", "frame", np.zeros((1, 1, 10000, 3), np.uint8), "UINT8", "10000x1 px: each side must be"),
    ]
    for model_name, name, array, dtype, says in bad:
        with pytest.raises(InferenceServerException) as caught:
            call(model_name, name, array, dtype)
        assert says in caught.value.message(), caught.value.message()
    ok = call("aunet_faces", "crops", np.zeros((2, 112, 112, 3), np.uint8))
    assert ok.as_numpy("score").shape == (2, 1)
    assert server.proc.poll() is None
    time.sleep(0.5)  # the refusal's log line is written after the answer
    ours = [line for line in _stderr_lines(server) if line.startswith("aunet-serve:")]
    assert any("refused a request: frame of 10000x1 px" in line for line in ours), ours
    assert not any("Traceback" in line for line in ours)
    client.close()


def test_concurrent_clients_are_batched_and_all_answered(server, local):
    from aunet.runtime.client import RemoteDetector

    before = server.metrics()
    rng = np.random.default_rng(1)
    jobs = [rng.integers(0, 256, (int(rng.integers(1, 5)), 112, 112, 3), dtype=np.uint8) for _ in range(48)]
    barrier = threading.Barrier(16, timeout=30)

    with RemoteDetector(server.urls["grpc"], timeout_s=30) as remote:
        def run(k):
            if k < 16:
                barrier.wait()  # the first wave arrives together
            return remote.predict_faces(jobs[k])

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(run, range(len(jobs)), timeout=60))
    for crops, got in zip(jobs, answers, strict=True):
        want = local.predict_faces(crops)
        assert np.array_equal(got.scores, want.scores) and np.array_equal(got.region_maps, want.region_maps)
    after = server.metrics()
    faces = sum(len(j) for j in jobs)
    count, runs = (after[(m, "aunet_faces")] - before[(m, "aunet_faces")]
                   for m in ("nv_inference_count", "nv_inference_exec_count"))
    assert count == faces
    assert runs < len(jobs), "the dynamic batcher never put two requests in one batch"


def test_sigterm_answers_the_requests_in_flight_then_stops(model, tmp_path):
    from aunet.demo.sample_data import sample_frame
    from aunet.runtime.client import RemoteDetector

    from aunet.serve.process import ServerProcess

    # requests wait up to 1 s in the batcher's queue for others: still in flight when SIGTERM comes
    s = ServerProcess(model, tmp_path, "--exit-timeout", "20", "--queue-delay-us", "1000000")
    try:
        rng = np.random.default_rng(0)
        frames = [np.ascontiguousarray(sample_frame(rng, (640, 480))) for _ in range(3)]
        with RemoteDetector(s.urls["grpc"], timeout_s=60) as remote:
            with ThreadPoolExecutor(3) as pool:
                futures = [pool.submit(remote.predict_frame, f) for f in frames]
                time.sleep(0.3)
                assert not all(f.done() for f in futures), "the requests finished before SIGTERM: nothing tested"
                s.proc.send_signal(signal.SIGTERM)
                results = [f.result(timeout=60) for f in futures]
        assert all(len(r.faces) >= 1 for r in results)
        assert s.stop() == 0
    finally:
        s.kill()
    lines = _stderr_lines(s)
    assert lines[-1] == "aunet-serve: stopped", lines[-5:]
    assert not any("Traceback" in line or "leaked shared_memory" in line for line in lines)


def test_startup_errors_are_one_line_and_exit_2(model, tmp_path):
    _needs_pytriton()
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model at all")
    ckpt = tmp_path / "best.pt"
    ckpt.write_bytes(b"x")
    from aunet.serve.server import free_port

    cases = [(["--engine", str(garbage)], "not a readable ONNX"),
             (["--engine", str(ckpt)], "is a PyTorch checkpoint"),
             (["--engine", str(model), "--http-port", "9100", "--grpc-port", "9100"], "must differ"),
             (["--engine", str(model), "--detector", str(tmp_path / "none.onnx")], "face detector model not found"),
             (["--engine", str(model), "--detector", "faces.bin"], "expected a face detector .onnx")]
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", free_port()))
        busy.listen()
        port = busy.getsockname()[1]
        cases.append((["--engine", str(model), "--http-port", str(port)], "already in use"))
        for args, says in cases:
            res = subprocess.run([sys.executable, "-m", "aunet.serve.cli", *args], capture_output=True, text=True,
                                 timeout=60)
            assert res.returncode == 2, (args, res.stderr)
            assert res.stderr.startswith("aunet-serve: error: ") and says in res.stderr, res.stderr
            assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_bench_serve_table_and_rows(model, tmp_path, capsys):
    """`aunet-bench serve` end to end on two small levels: a table, not a timing check; its counts must add up."""
    _needs_pytriton()
    from aunet.bench.cli import main

    out = tmp_path / "bench.json"
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--engine", str(model), "--concurrency", "1", "--concurrency", "3", "--requests", "2",
              "--crops", "2", "--json", str(out)])
    assert exit_.value.code == 0, capsys.readouterr().err
    doc = json.loads(out.read_text())
    rows = {(r["kind"], r["where"], r["clients"]): r for r in doc["rows"]}
    assert set(rows) == {(k, w, c) for k in ("crops", "frames") for w in ("in-process", "aunet-serve grpc")
                         for c in (1, 3)}
    for (kind, where, clients), r in rows.items():
        assert r["requests"] == 2 * clients and r["p50"] <= r["p99"]
        if where != "in-process":  # Triton counted every crop (2 a request) and frame it ran
            assert r["server_items"] == r["requests"] * (2 if kind == "crops" else 1)
            assert 1 <= r["server_batches"] <= r["requests"]
    assert "server batch" in capsys.readouterr().out
