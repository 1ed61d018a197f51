"""Runtime errors and the exit codes `aunet-infer` maps them to (documented in docs/runtime.md)."""
from __future__ import annotations

EXIT_OK = 0
EXIT_FAKE_FOUND = 1  # only with --fail-on-fake: some input's verdict is "fake"
EXIT_BAD_INPUT = 2  # usage, missing/unreadable/corrupt input, zero frames, bad engine file, spec mismatch
EXIT_MISSING_DEPENDENCY = 3  # TensorRT/pycuda/dlib missing, no GPU, engine built for another GPU or TensorRT
EXIT_INFERENCE_FAILED = 4  # the backend failed while running (e.g. GPU out of memory)
EXIT_SOURCE_LOST = 5  # a live source (camera, stream) stopped delivering frames; what was scored is written
EXIT_INTERRUPTED = 130  # Ctrl-C: the results so far are written (the usual 128 + SIGINT)


class InputError(ValueError):
    """An input that cannot be analysed: missing, unreadable, corrupt, or without any decodable frame."""


class SourceLost(InputError):
    """A live source (webcam, RTSP/HTTP stream) stopped delivering frames before it was stopped: unplugged,
    dropped, timed out. Everything scored before it is kept."""


class OutputError(OSError):
    """An output cannot be written (unwritable path, disk full): the whole run stops, what is written stays."""


class InferenceError(RuntimeError):
    """The backend failed on a batch (out of memory, driver error, ...)."""


def describe(exc: BaseException) -> str:
    """One line for stderr or a JSON record: the message, never a traceback. The project's own errors say
    what went wrong already; foreign ones (numpy, OpenCV, ONNX Runtime) keep their type name as context."""
    msg = " ".join(str(exc).split()) or type(exc).__name__
    return msg if type(exc).__module__.startswith("aunet") else f"{type(exc).__name__}: {msg}"
