"""`aunet-serve` as a child process on free loopback ports, for benchmarks and tests: started, waited for until
its models are ready, stopped with SIGTERM; and its Prometheus metrics, read. Every wait is bounded."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Optional

from aunet.runtime.client import FACES_MODEL, FRAMES_MODEL, INFO_MODEL

from .server import free_port

MODELS = (FACES_MODEL, FRAMES_MODEL, INFO_MODEL)
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 45.0


def http_status(url: str, timeout_s: float = 2.0) -> int:
    """The HTTP status of a GET, 0 when nothing answers (or an error status is raised)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            return int(r.status)
    except OSError:
        return 0


def read_metrics(url: str, timeout_s: float = 5.0) -> dict[tuple[str, str], float]:
    """Triton's per-model counters from ``/metrics``: {(metric name, model): value}."""
    with urllib.request.urlopen(url, timeout=timeout_s) as r:
        text = r.read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith("#") or "{" not in line or 'model="' not in line:
            continue
        name, _, rest = line.partition("{")
        model = rest.split('model="', 1)[1].split('"', 1)[0]
        try:
            values[(name, model)] = float(line.rsplit(" ", 1)[1])
        except ValueError:
            continue
    return values


class ServerProcess:
    """``python -m aunet.serve.cli --engine MODEL`` on three free 127.0.0.1 ports, its stdout (Triton's log) and
    stderr (aunet-serve's) written to files in ``log_dir``. Raises RuntimeError when it is not ready within
    ``START_TIMEOUT_S`` (with the end of its stderr) and is then killed."""

    def __init__(self, engine: str | Path, log_dir: str | Path, *extra: str, python: Optional[str] = None):
        ports: set[int] = set()
        while len(ports) < 3:
            ports.add(free_port())
        self.http_port, self.grpc_port, self.metrics_port = sorted(ports)
        self.urls = {"http": f"http://127.0.0.1:{self.http_port}", "grpc": f"grpc://127.0.0.1:{self.grpc_port}",
                     "metrics": f"http://127.0.0.1:{self.metrics_port}/metrics"}
        log_dir = Path(log_dir)
        self.out_path, self.err_path = log_dir / "serve.out", log_dir / "serve.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [python or sys.executable, "-m", "aunet.serve.cli", "--engine", str(engine),
                 "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port),
                 "--metrics-port", str(self.metrics_port), *extra],
                stdout=out, stderr=err, start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.kill()
            raise

    def _wait_ready(self) -> None:
        # /v2/health/ready answers before PyTriton has loaded the models: wait for each of them
        ready = [f"{self.urls['http']}/v2/models/{m}/ready" for m in MODELS]
        deadline = time.monotonic() + START_TIMEOUT_S
        while not all(http_status(url) == 200 for url in ready):
            if self.proc.poll() is not None:
                raise RuntimeError(f"aunet-serve exited with {self.proc.returncode}: {self.stderr()[-1500:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"aunet-serve not ready after {START_TIMEOUT_S:.0f} s: {self.stderr()[-1500:]}")
            time.sleep(0.2)

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def metrics(self) -> dict[tuple[str, str], float]:
        return read_metrics(self.urls["metrics"])

    def stop(self) -> int:
        """SIGTERM, then its exit code; killed (RuntimeError) when it has not stopped in ``STOP_TIMEOUT_S``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"aunet-serve did not stop within {STOP_TIMEOUT_S:.0f} s of SIGTERM") from None

    def kill(self) -> None:
        """SIGKILL to its process group (Triton included) unless it has exited."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.stop()
        finally:
            self.kill()
