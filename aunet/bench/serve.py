"""`aunet-bench serve`: the Detector behind Triton (aunet-serve) against the same Detector in-process, with 1, 4
and 16 concurrent clients: requests/s, latency p50/p95/p99, and the batch sizes Triton's dynamic batcher reached
(from its Prometheus counters), for face crops (`aunet_faces`) and whole frames (`aunet_frames`).

The in-process rows run first, then the server is started in a child process (`python -m aunet.serve.cli`) on
free loopback ports, so the two never share the CPUs. Needs the serve venv (PyTriton; `make serve-env`).
"""
from __future__ import annotations

import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from aunet.bench.measure import latency_stats, machine_info
from aunet.cli import EXIT_BAD_INPUT, EXIT_MISSING, fail

PROG = "aunet-bench"
EPILOG = ("Exit codes: 0 done; 2 bad input; 3 PyTriton or another dependency missing; 4 the server failed to start "
          "or a request failed.")
KINDS = ("crops", "frames")
console = Console(width=120)


def run_clients(call: Callable[[Any], Any], payload: Any, clients: int, requests: int) -> dict[str, Any]:
    """``clients`` threads, started together, each making ``requests`` calls ``call(payload)`` one after the
    other; requests/s over the wall time and latency percentiles (ms). Raises the first call's exception."""
    latencies: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(clients, timeout=60)

    def client() -> None:
        start.wait()
        mine = []
        for _ in range(requests):
            t0 = time.perf_counter()
            call(payload)
            mine.append(time.perf_counter() - t0)
        with lock:
            latencies.extend(mine)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    wall = time.perf_counter() - t0
    return {"requests": len(latencies), "wall_s": wall, "requests_per_s": len(latencies) / wall,
            **latency_stats(latencies)}


def bench_inputs(detector, frame_size: tuple[int, int], crops_per_request: int) -> tuple[np.ndarray, np.ndarray]:
    """One frame of ``frame_size`` with the sample face, and ``crops_per_request`` crops of that face, cut by the
    detector as the runtime cuts them."""
    from aunet.bench.pipeline import detector_frame

    frame = np.ascontiguousarray(detector_frame(frame_size))
    faces = detector.face_detector.detect(frame)
    if not faces:
        raise ValueError(f"the face detector found no face in the {frame_size[0]}x{frame_size[1]} sample frame")
    crops, _ = detector.crop_faces(frame, faces[:1])
    return frame, np.ascontiguousarray(np.repeat(crops, crops_per_request, axis=0))


def settled_metrics(server, wait_s: float = 0.2, tries: int = 25) -> dict:
    """Triton's per-model counters once two reads ``wait_s`` apart agree (at most ``tries`` reads): Triton updates
    them just after a response is sent, so a read right after the last answer can miss the last requests."""
    last = server.metrics()
    for _ in range(tries):
        time.sleep(wait_s)
        now = server.metrics()
        if now == last:
            return now
        last = now
    return last


def measure(engine: Path, concurrency: list[int], requests: int, frame_size: tuple[int, int], crops_per_request: int,
            protocol: str, server_args: list[str], say: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """Every row: in-process first, then through a freshly started aunet-serve."""
    from aunet.runtime.client import FACES_MODEL, FRAMES_MODEL, RemoteDetector
    from aunet.runtime.pipeline import Detector
    from aunet.serve.process import ServerProcess

    rows = []
    with Detector(engine, batch_size=32) as local:
        frame, crops = bench_inputs(local, frame_size, crops_per_request)
        calls = {"crops": local.predict_faces, "frames": local.predict_frame}
        for kind in KINDS:
            payload = crops if kind == "crops" else frame
            calls[kind](payload)  # warm-up
            for c in concurrency:
                say(f"in-process {kind}, {c} clients ...")
                rows.append({"kind": kind, "where": "in-process", "clients": c,
                             **run_clients(calls[kind], payload, c, requests)})
        backend, face_detector = local.backend.name, local.face_detector.name
    with tempfile.TemporaryDirectory() as logs, ServerProcess(engine, logs, *server_args) as server:
        with RemoteDetector(server.urls[protocol], timeout_s=120) as remote:
            calls = {"crops": remote.predict_faces, "frames": remote.predict_frame}
            models = {"crops": FACES_MODEL, "frames": FRAMES_MODEL}
            for kind in KINDS:
                payload = crops if kind == "crops" else frame
                calls[kind](payload)
                for c in concurrency:
                    say(f"aunet-serve ({protocol}) {kind}, {c} clients ...")
                    before = settled_metrics(server)
                    row = run_clients(calls[kind], payload, c, requests)
                    after = settled_metrics(server)
                    items, runs = (after.get((m, models[kind]), 0.0) - before.get((m, models[kind]), 0.0)
                                   for m in ("nv_inference_count", "nv_inference_exec_count"))
                    rows.append({"kind": kind, "where": f"aunet-serve {protocol}", "clients": c, **row,
                                 "server_batches": int(runs), "server_items": int(items),
                                 "mean_server_batch": items / runs if runs else None})
    return {"engine": str(engine), "backend": backend, "face_detector": face_detector,
            "frame_size": list(frame_size), "crops_per_request": crops_per_request, "protocol": protocol,
            "requests_per_client": requests, "rows": rows, "machine": machine_info()}


def serve_table(doc: dict[str, Any]) -> Table:
    m = doc["machine"]
    flags = ", ".join(m.get("cpu_flags", [])) or "none reported"
    w, h = doc["frame_size"]
    table = Table(title=f"aunet-serve vs in-process: {Path(doc['engine']).name}, {doc['backend']}, "
                        f"{doc['face_detector']}; crops: {doc['crops_per_request']} per request, frames: {w}x{h}; "
                        f"{m.get('cpu_model', '')}, {m.get('cpus')} CPUs, flags: {flags}")
    for col in ("input", "where", "clients", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "server batch"):
        table.add_column(col, justify="left" if col in ("input", "where") else "right")
    for r in doc["rows"]:
        batch = r.get("mean_server_batch")
        table.add_row(r["kind"], r["where"], str(r["clients"]), str(r["requests"]), f"{r['requests_per_s']:.1f}",
                      f"{r['p50']:.1f}", f"{r['p95']:.1f}", f"{r['p99']:.1f}",
                      "-" if batch is None else f"{batch:.2f} ({r['server_batches']} runs)")
    return table


def serve(
    engine: Path = typer.Option(..., "--engine", "-e", help="Model for both sides (.onnx, .plan/.engine)."),
    concurrency: list[int] = typer.Option([1, 4, 16], "--concurrency", min=1, max=64,
                                          help="Concurrent clients (repeatable)."),
    requests: int = typer.Option(10, "--requests", min=1, max=10_000, help="Requests per client at each level."),
    frame_size: str = typer.Option("640x480", "--frame-size", help="Frames sent to aunet_frames, WIDTHxHEIGHT."),
    crops_per_request: int = typer.Option(1, "--crops", min=1, max=32, help="Face crops per aunet_faces request."),
    protocol: Literal["grpc", "http"] = typer.Option("grpc", "--protocol", help="Client protocol."),
    queue_delay_us: Optional[int] = typer.Option(
        None, "--queue-delay-us", min=0, max=1_000_000, help="The server's batching delay (default: aunet-serve's)."
    ),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the rows as JSON here."),
) -> None:
    """Requests/s and latency of aunet-serve (Triton) vs the in-process Detector, 1/4/16 clients, crops and frames,
    and the batch sizes the server's dynamic batcher reached."""
    from aunet.bench.pipeline import parse_size
    from aunet.io import atomic_write_text
    from aunet.runtime.errors import describe

    if json_out is not None and json_out.is_dir():
        raise fail(PROG, f"--json: {json_out} is a folder, expected a file path")
    try:
        size = parse_size(frame_size)
    except ValueError as exc:
        raise fail(PROG, f"--frame-size: {exc}") from None
    try:
        import pytriton  # noqa: F401
        import tritonclient.grpc  # noqa: F401
        import tritonclient.http  # noqa: F401
    except (ImportError, RuntimeError) as exc:
        raise fail(PROG, f"aunet-bench serve needs the serve venv (PyTriton, tritonclient; make serve-env): {exc}",
                   EXIT_MISSING) from None
    from aunet.backends import BackendError, check_model_path

    try:
        check_model_path(engine)
    except BackendError as exc:
        raise fail(PROG, str(exc), EXIT_BAD_INPUT) from None
    server_args = [] if queue_delay_us is None else ["--queue-delay-us", str(queue_delay_us)]
    try:
        doc = measure(engine, sorted(set(concurrency)), requests, size, crops_per_request, protocol, server_args,
                      say=lambda line: console.print(line, style="dim"))
    except ValueError as exc:
        raise fail(PROG, describe(exc), EXIT_BAD_INPUT) from None
    except Exception as exc:  # the server did not start, a request failed
        raise fail(PROG, describe(exc), 4) from None
    console.print(serve_table(doc))
    if json_out is not None:
        import json

        atomic_write_text(json_out, json.dumps(doc, indent=2))
        console.print(f"wrote {json_out}")
