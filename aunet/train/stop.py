"""Ctrl-C and SIGTERM as a request to stop the run cleanly."""
from __future__ import annotations

import signal
import threading
from typing import Any


class StopRequest:
    """SIGINT / SIGTERM ask the loop to stop after the current step (it then writes a resumable last.pt);
    a second SIGINT interrupts at once (last.pt is then the previous save)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
