"""A pipeline stage on a background thread: produces into a bounded queue, re-raises its errors downstream.

Bounded queues keep memory flat on long videos (a slow consumer blocks the producer); an exception in the
producer reaches the consumer at the item where it happened; ``close()`` stops the producer even when it is
blocked on a full queue, so nothing hangs when the consumer gives up early. A ``cancel`` event ends the
iteration at the next item or poll (a Ctrl-C while a live stream waits for its next frame).
"""
from __future__ import annotations

import queue
import threading
from typing import Generic, Iterable, Iterator, Optional, TypeVar

T = TypeVar("T")

_POLL_S = 0.1


class _Done:
    pass


class _Failed:
    def __init__(self, exc: BaseException):
        self.exc = exc


class BackgroundIterator(Generic[T]):
    """Iterate ``source`` on a daemon thread; iterate this object to consume. Use as a context manager."""

    def __init__(self, source: Iterable[T], maxsize: int, name: str, cancel: Optional[threading.Event] = None):
        self._source = source
        self._cancel = cancel
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, maxsize))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        it = iter(self._source)
        try:
            for item in it:
                if not self._put(item):
                    break
            else:
                self._put(_Done())
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self._put(_Failed(exc))
        finally:
            close = getattr(it, "close", None)
            if close is not None:  # runs the generator's finally (releases the video capture)
                try:
                    close()
                except Exception:
                    pass

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        while True:
            if self._cancel is not None and self._cancel.is_set():
                raise StopIteration
            try:
                item = self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    raise StopIteration from None
                continue
            if isinstance(item, _Done):
                raise StopIteration
            if isinstance(item, _Failed):
                raise item.exc
            return item

    def close(self, timeout: float = 5.0) -> None:
        """Stop the producer and wait for it (a producer stuck in a blocking read is left as a daemon)."""
        self._stop.set()
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass
        self._thread.join(timeout)

    def __enter__(self) -> "BackgroundIterator[T]":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
