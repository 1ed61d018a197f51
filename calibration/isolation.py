"""Run one function in a fresh (spawned) child process: a crash there is an error here, never the caller's end.

Reduced-precision graphs can crash ONNX Runtime's CPU provider (a segfault, not an exception; see
aunet.backends), and importing ModelOpt patches ONNX Runtime's calibrators for the rest of a process. So the
calibration room runs every INT8 model, and every quantizer, through ``run_isolated``: the result (or the
exception) comes back through a pipe; a child killed by a signal, or one that outlives ``timeout``, raises
``ChildCrashed`` with the signal's name.
"""
from __future__ import annotations

import multiprocessing as mp
import signal
from typing import Any, Callable


class ChildCrashed(RuntimeError):
    """The child process died (a signal, or an exit without a result) or did not finish in time."""


def _child(conn, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
    try:
        result = ("ok", fn(*args, **kwargs))
    except BaseException as exc:  # noqa: BLE001 - everything the child raises goes back to the parent
        result = ("error", exc)
    try:
        conn.send(result)
    except Exception as exc:  # an exception or result that does not pickle
        conn.send(("error", RuntimeError(f"{type(result[1]).__name__}: {result[1]} (not picklable: {exc})")))
    finally:
        conn.close()


def describe_exit(code: int | None) -> str:
    """'SIGSEGV' for a child killed by signal 11, 'exit code 3' otherwise."""
    if code is not None and code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def run_isolated(fn: Callable[..., Any], *args: Any, timeout: float = 3600, what: str = "", **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` in a spawned child; its return value, or its exception re-raised here.

    ``fn`` and its arguments must pickle (a module-level function, numpy arrays, paths). ``what`` names the
    work in the ChildCrashed message ("the INT8 model crashed ONNX Runtime (SIGSEGV)")."""
    ctx = mp.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, fn, args, kwargs))  # not a daemon: it may spawn its own
    proc.start()
    send.close()  # the child holds the only write end: its death makes poll() return
    label = what or getattr(fn, "__name__", "the child process")
    try:
        if not receive.poll(timeout):
            proc.kill()
            proc.join()
            raise ChildCrashed(f"{label} did not finish within {timeout:g} s")
        try:
            status, value = receive.recv()
        except EOFError:
            proc.join()
            raise ChildCrashed(f"{label} crashed ({describe_exit(proc.exitcode)})") from None
    finally:
        receive.close()
    proc.join()
    if status == "error":
        raise value
    return value
