"""What every benchmark measures with: the machine it ran on, timed calls, latency percentiles, memory."""
from __future__ import annotations

import os
import platform
import time
from typing import Any, Callable

import numpy as np

from aunet.backends import KERNEL_CPU_FLAGS, cpu_model_and_flags  # noqa: F401 - re-exported


def machine_info() -> dict[str, Any]:
    """The box a run measured: CPU count, model and kernel-relevant flags, load average, Python."""
    model, flags = cpu_model_and_flags()
    return {"cpus": os.cpu_count(), "cpu_model": model, "cpu_flags": flags, "load_avg_1m": os.getloadavg()[0],
            "machine": platform.machine(), "python": platform.python_version()}


def time_calls(fn: Callable[[Any], Any], x: Any, repeats: int, warmup: int,
               sync: Callable[[], Any] = lambda: None) -> list[float]:
    """Seconds of each of ``repeats`` calls ``fn(x)`` after ``warmup`` untimed ones; ``sync`` waits for a GPU."""
    times = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        fn(x)
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def latency_stats(times_s: list[float]) -> dict[str, float]:
    """Milliseconds: p50, p95, p99, mean, min, and the number of calls."""
    ms = np.asarray(times_s, dtype=np.float64) * 1e3
    return {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)),
            "p99": float(np.percentile(ms, 99)), "mean": float(ms.mean()), "min": float(ms.min()), "n": int(ms.size)}


def batch_of(x: np.ndarray, b: int) -> np.ndarray:
    """``b`` inputs from ``x``, cycling when it is smaller."""
    return np.ascontiguousarray(x[np.arange(b) % len(x)])


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux reports ru_maxrss in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """Resident memory now (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0
