"""`aunet-serve --engine MODEL`: the torch-free Detector behind NVIDIA Triton, for many clients on one model.

Three Triton models over HTTP and gRPC: `aunet_faces` (face crops -> score, region grid), `aunet_frames` (whole
frames -> each face's box, score and region grid, found and cropped by the server's face detector) and
`aunet_info` (the model spec); dynamic batching, `/v2/health/ready`, Prometheus metrics. Loopback only unless
--host says otherwise. SIGTERM or Ctrl-C stops it after the requests in flight are answered. Clients:
`aunet-infer --server grpc://127.0.0.1:8001 clip.mp4` or `aunet.runtime.client.RemoteDetector`. Needs the
`serve` extra (PyTriton), which pins numpy<2: install it in a venv of its own (`make serve-env`). Exit codes: 0
stopped cleanly; 2 bad usage, a model file that is not a model, a port in use; 3 PyTriton or another optional
dependency missing; 4 Triton failed to start or stopped by itself; 130 interrupted while starting.
"""
from __future__ import annotations

import dataclasses
import logging
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Literal, Optional, Sequence

import typer

from aunet.backends import DEVICES
from aunet.cli import EXIT_MISSING, fail, run

from .server import (
    DEFAULT_EXIT_TIMEOUT_S,
    DEFAULT_FRAMES_MAX_BATCH,
    DEFAULT_MAX_BATCH,
    DEFAULT_QUEUE_DELAY_US,
    ServeConfig,
)

PROG = "aunet-serve"
EXIT_SERVER_FAILED = 4

app = typer.Typer(add_completion=False, help=__doc__, pretty_exceptions_enable=False)


def _port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise typer.BadParameter(f"{value} is not a TCP port (1-65535)")
    return value


@app.command(epilog="Exit codes: 0 stopped cleanly; 2 bad usage, model or port; 3 missing dependency; 4 Triton "
                    "failed to start or stopped by itself; 130 interrupted while starting. See docs/serving.md.")
def serve(
    engine: Path = typer.Option(..., "--engine", "-e", help="Model: .onnx, or a TensorRT .plan/.engine + sidecar."),
    spec: Optional[Path] = typer.Option(
        None, "--spec", help="For a .plan/.engine built elsewhere without a sidecar: the ONNX it was built from."
    ),
    detector: Optional[str] = typer.Option(
        None, "--detector", help="Face detector for aunet_frames, as aunet-infer --detector: a detector .onnx or "
                                 "auto, blazeface, dlib (default: the one the model's spec records, else auto)."
    ),
    detect_max_side: Optional[int] = typer.Option(
        None, "--detect-max-side", min=64, help="Detect faces on frames shrunk to this longer side (speed on HD)."
    ),
    device: Literal[DEVICES] = typer.Option("auto", "--device", help="Where the model runs."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (default: loopback only)."),
    http_port: int = typer.Option(8000, "--http-port", callback=_port, help="HTTP/REST port."),
    grpc_port: int = typer.Option(8001, "--grpc-port", callback=_port, help="gRPC port."),
    metrics_port: int = typer.Option(8002, "--metrics-port", callback=_port, help="Prometheus /metrics port."),
    max_batch: int = typer.Option(
        DEFAULT_MAX_BATCH, "--max-batch", min=1, max=1024, help="Face crops per batch (capped by the engine)."
    ),
    frames_max_batch: int = typer.Option(
        DEFAULT_FRAMES_MAX_BATCH, "--frames-max-batch", min=1, max=256, help="Frames of one size per batch."
    ),
    queue_delay_us: int = typer.Option(
        DEFAULT_QUEUE_DELAY_US, "--queue-delay-us", min=0, max=1_000_000,
        help="How long a request may wait for others to fill a batch (microseconds)."
    ),
    exit_timeout: int = typer.Option(
        DEFAULT_EXIT_TIMEOUT_S, "--exit-timeout", min=1, max=3600,
        help="On SIGTERM or Ctrl-C: seconds the requests in flight get to finish."
    ),
) -> None:
    """Serve a deployed model and its face detector through Triton until SIGTERM or Ctrl-C."""
    from aunet.backends import BackendError, check_model_path
    from aunet.runtime.cli import check_detector_option, engine_exit_code
    from aunet.runtime.errors import describe

    from .server import ports_in_use
    from .server import serve as run_server

    if len({http_port, grpc_port, metrics_port}) < 3:
        raise fail(PROG, f"--http-port, --grpc-port and --metrics-port must differ ({http_port}, {grpc_port}, "
                         f"{metrics_port})")
    try:
        for path in (engine, spec):
            if path is not None:
                check_model_path(path)
    except BackendError as exc:  # a missing file, a checkpoint, an unknown suffix: before anything loads
        raise fail(PROG, str(exc)) from None
    check_detector_option(detector, prog=PROG)
    try:
        import pytriton  # noqa: F401
    except ImportError:
        raise fail(PROG, "aunet-serve needs PyTriton: pip install 'aunet[serve]' in a venv of its own (it pins "
                         "numpy<2; make serve-env)", EXIT_MISSING) from None
    config = ServeConfig(host=host, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
                         max_batch=max_batch, frames_max_batch=frames_max_batch, queue_delay_us=queue_delay_us,
                         exit_timeout_s=exit_timeout)
    try:
        taken = ports_in_use(config)
    except OSError as exc:  # an address this machine does not have
        raise fail(PROG, f"--host {host}: {exc.strerror or exc}") from None
    if taken:
        raise fail(PROG, f"port {', '.join(map(str, taken))} on {host} already in use")

    try:
        model = _load(engine, spec=spec, device=device, batch_size=max_batch, detector_model=detector,
                      detect_max_side=detect_max_side)
    except Exception as exc:
        msg = describe(exc)
        raise fail(PROG, msg if str(engine) in msg else f"cannot load {engine}: {msg}", engine_exit_code(exc)) from None
    try:
        model.face_detector  # noqa: B018 - a missing dlib or a bad detector model is a startup error
    except Exception as exc:
        model.close()
        raise fail(PROG, f"cannot load the face detector: {describe(exc)}", engine_exit_code(exc)) from None

    logging.basicConfig(format=f"{PROG}: %(message)s", level=logging.WARNING)  # PyTriton's warnings, in our voice
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    config = dataclasses.replace(config, max_batch=model.batch_size)  # capped by the engine's profile
    try:
        with model:
            run_server(model, config, stop, on_ready=_announce(engine))
    except Exception as exc:
        raise fail(PROG, f"Triton: {describe(exc)}", EXIT_SERVER_FAILED) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(f"{PROG}: stopped", file=sys.stderr, flush=True)


def _load(engine: Path, **options):
    """The Detector; an engine built elsewhere warns once, ``aunet-serve: warning: ...``."""
    from aunet.backends import UnverifiedEngineWarning
    from aunet.runtime.pipeline import Detector

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnverifiedEngineWarning)
        model = Detector(engine, **options)
    for w in caught:
        if issubclass(w.category, UnverifiedEngineWarning):
            print(f"{PROG}: warning: {' '.join(str(w.message).split())}", file=sys.stderr, flush=True)
    return model


def _announce(engine: Path):
    def on_ready(config: ServeConfig) -> None:
        urls = config.urls()
        print(f"{PROG}: serving {engine} at {urls['http']} and {urls['grpc']} (metrics {urls['metrics']}); "
              "SIGTERM or Ctrl-C stops it", file=sys.stderr, flush=True)
    return on_ready


def main(argv: Optional[Sequence[str]] = None) -> None:
    run(app, PROG, argv)


if __name__ == "__main__":
    main()
