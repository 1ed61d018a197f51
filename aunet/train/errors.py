"""TrainError: a run that cannot start or go on, with the exit code aunet-train reports it with."""
from __future__ import annotations

from aunet.cli import EXIT_BAD_INPUT, EXIT_CHECK_FAILED, EXIT_MISSING

EXIT_DIVERGED = EXIT_CHECK_FAILED  # a non-finite loss or validation score
EXIT_NO_HARDWARE = EXIT_MISSING  # --device cuda on a machine without CUDA


class TrainError(Exception):
    """A run that cannot start or go on; ``code`` is the CLI's exit code."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT):
        super().__init__(message)
        self.code = code
