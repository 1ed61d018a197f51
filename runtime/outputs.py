"""Where `aunet-infer` writes its results: one JSON document, or records streamed as they are scored.

- ``json``: one object per input (a list for several), written atomically when the run ends.
- ``jsonl``: one JSON record per line, written as it happens: ``start`` (the input and the model), ``frame``
  (each scored frame), ``window`` (live sources: a verdict every ``--window`` seconds), ``summary`` (the input's
  verdict; it marks the input done) or ``error``. Every line is written with one ``write`` call and flushed, so
  a crash or Ctrl-C loses nothing already written and leaves no half record behind (a power cut can lose the
  last second: data is fsync'd at every window, summary and error record and at least once a second).
- ``csv``: one row per scored face, plus ``window``, ``summary`` and ``error`` rows (the ``record`` column).

Every record carries ``schema_version`` (``results.SCHEMA_VERSION``). ``read_done`` reads what an earlier run
finished, for ``--skip-done``: an input counts as done only when its summary record is complete (a whole
line, parsed) and was not cut short by Ctrl-C; the partial records of an input that is redone are dropped.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Optional

from aunet.io import atomic_path, atomic_write_text

from .errors import InputError, OutputError
from .results import SCHEMA_VERSION, VERDICT_ERROR, FrameResult, Tally, VideoResult, error_record, verdict_for

FORMATS = ("json", "jsonl", "csv")
DEFAULT_WINDOW_S = 10.0
FSYNC_INTERVAL_S = 1.0
CSV_COLUMNS = ("schema_version", "record", "source", "frame", "time_s", "face", "x0", "y0", "x1", "y1",
               "detector_score", "score", "verdict", "frames", "frames_with_face", "note")
DONE_VERDICTS = ("real", "fake", "no_face")


def source_key(source: str) -> str:
    """What identifies an input across runs: a file's absolute path (same working folder), a URL or webcam as is."""
    if source.startswith("webcam:") or "://" in source:
        return source
    return os.path.abspath(source)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _r(value: Optional[float], digits: int = 5) -> Optional[float]:
    return None if value is None else round(float(value), digits)


# --- live windows -----------------------------------------------------------------------------------------------


@dataclass
class Window:
    """The running verdict of one window of a live source: frames whose time falls in [start_s, end_s)."""

    number: int
    start_s: float
    end_s: float
    tally: Tally = field(default_factory=Tally)

    def record(self, source: str, threshold: float, partial: bool = False) -> dict[str, Any]:
        t = self.tally
        return {"schema_version": SCHEMA_VERSION, "type": "window", "source": source, "window": self.number,
                "start_s": round(self.start_s, 3), "end_s": round(self.end_s, 3), "partial": partial,
                "frames": t.frames, "frames_with_face": t.frames_with_face, "faces": t.faces,
                "score": _r(t.score), "max_score": _r(t.max_score), "verdict": verdict_for(t.score, threshold)}


class Windows:
    """Cuts a live source's frames into windows of ``length_s`` seconds (by the frames' time); ``add`` returns the
    windows a frame closes. Windows without any analysed frame are not reported."""

    def __init__(self, length_s: float):
        if not length_s > 0:
            raise ValueError(f"window length must be > 0 s, got {length_s}")
        self.length_s = length_s
        self.current: Optional[Window] = None

    def add(self, frame: FrameResult) -> Optional[Window]:
        number = int(math.floor(frame.time_s / self.length_s))
        closed = None
        if self.current is not None and number != self.current.number:
            closed, self.current = self.current, None
        if self.current is None:
            self.current = Window(number, number * self.length_s, (number + 1) * self.length_s)
        self.current.tally.add(frame)
        return closed

    def flush(self) -> Optional[Window]:
        last, self.current = self.current, None
        return last


# --- the output file or stdout ----------------------------------------------------------------------------------


class OutputStream:
    """Text records to a file (each record one ``os.write``: never split, never buffered) or to stdout (flushed).

    ``append`` keeps what the file holds (``--skip-done``); otherwise it starts empty. ``checkpoint=True`` or a
    second since the last one fsyncs the file."""

    def __init__(self, path: Optional[Path], append: bool = False):
        self.path = path
        self._fd: Optional[int] = None
        self._last_sync = time.monotonic()
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
                self._fd = os.open(path, flags, 0o666)
            except OSError as exc:
                raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None

    def write(self, text: str, checkpoint: bool = False) -> None:
        try:
            if self._fd is None:
                sys.stdout.write(text)
                sys.stdout.flush()
                return
            data = memoryview(text.encode("utf-8"))
            while data:
                n = os.write(self._fd, data)
                data = data[n:]
            now = time.monotonic()
            if checkpoint or now - self._last_sync >= FSYNC_INTERVAL_S:
                os.fsync(self._fd)
                self._last_sync = now
        except OSError as exc:
            raise OutputError(f"cannot write {self.path or 'stdout'}: {exc.strerror or exc}") from None

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.fsync(self._fd)
            except OSError:
                pass
            os.close(self._fd)
            self._fd = None


# --- sinks ------------------------------------------------------------------------------------------------------


class Sink:
    """What the CLI calls per input: ``begin`` once it opened, ``frame`` per scored frame (in order), then
    ``finish`` with the result or ``fail``. ``summaries`` keeps one small record per input (the summary table,
    ``--fail-on-fake``)."""

    def __init__(self, grids: bool, window_s: float):
        self.grids, self.window_s = grids, window_s
        self.summaries: list[dict[str, Any]] = []
        self._source = ""
        self._threshold = 0.5
        self._windows: Optional[Windows] = None

    def begin(self, source: str, info: dict[str, Any], threshold: float) -> None:
        self._source, self._threshold = source, threshold
        self._windows = Windows(self.window_s) if info.get("live") else None

    def frame(self, frame: FrameResult) -> None:
        if self._windows is not None:
            closed = self._windows.add(frame)
            if closed is not None:
                self._window(closed, partial=False)

    def _end_windows(self) -> None:
        if self._windows is not None:
            last = self._windows.flush()
            if last is not None:
                self._window(last, partial=True)
            self._windows = None

    def _window(self, window: Window, partial: bool) -> None:
        pass

    def finish(self, result: VideoResult, extra: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def fail(self, source: str, message: str, partial: Optional[VideoResult]) -> dict[str, Any]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    @staticmethod
    def summary_of(result: VideoResult, extra: dict[str, Any]) -> dict[str, Any]:
        d = result.to_dict(frames=False)
        for k in ("video", "live", "sampling", "backend", "face_detector", "face_policy", "batch_size",
                  "model_spec"):
            d.pop(k, None)
        d["stopped"] = bool(result.info.get("stopped", False))
        d.update(extra)
        return d


class JsonSink(Sink):
    """One JSON object per input, the document written when the run ends (atomically into ``path``)."""

    def __init__(self, path: Optional[Path], grids: bool, window_s: float, previous: Optional[list] = None):
        super().__init__(grids, window_s)
        self.path = path
        self.records: list[dict[str, Any]] = list(previous or [])
        self.many = bool(previous)

    def begin(self, source: str, info: dict[str, Any], threshold: float) -> None:
        super().begin(source, info, threshold)
        self._windows = None  # a JSON document has no windows: a live source runs here with --frames N only

    def finish(self, result: VideoResult, extra: dict[str, Any]) -> dict[str, Any]:
        record = result.to_dict(self.grids)
        record["stopped"] = bool(result.info.get("stopped", False))
        record.update(extra)
        self.records.append(record)
        self.summaries.append(record)
        return record

    def fail(self, source: str, message: str, partial: Optional[VideoResult]) -> dict[str, Any]:
        record = error_record(source, message, partial, self.grids)
        self.records.append(record)
        self.summaries.append(record)
        return record

    def write(self, many: bool) -> None:
        doc = self.records if (many or self.many or len(self.records) != 1) else self.records[0]
        text = json.dumps(doc, indent=2) + "\n"
        if self.path is None:
            sys.stdout.write(text)
            sys.stdout.flush()
            return
        try:
            atomic_write_text(self.path, text)
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from None


class JsonlSink(Sink):
    def __init__(self, path: Optional[Path], grids: bool, window_s: float, append: bool = False):
        super().__init__(grids, window_s)
        self.out = OutputStream(path, append)

    def _emit(self, record: dict[str, Any], checkpoint: bool = False) -> None:
        self.out.write(json.dumps(record, separators=(",", ":")) + "\n", checkpoint)

    def begin(self, source: str, info: dict[str, Any], threshold: float) -> None:
        super().begin(source, info, threshold)
        self._emit({"schema_version": SCHEMA_VERSION, "type": "start", "source": source, "started_at": now_iso(),
                    "threshold": threshold, **info}, checkpoint=True)

    def frame(self, frame: FrameResult) -> None:
        self._emit({"schema_version": SCHEMA_VERSION, "type": "frame", "source": self._source,
                    **frame.to_dict(self.grids)})
        super().frame(frame)

    def _window(self, window: Window, partial: bool) -> None:
        self._emit(window.record(self._source, self._threshold, partial), checkpoint=True)

    def finish(self, result: VideoResult, extra: dict[str, Any]) -> dict[str, Any]:
        self._end_windows()
        record = {"schema_version": SCHEMA_VERSION, "type": "summary", **self.summary_of(result, extra),
                  "finished_at": now_iso()}
        self._emit(record, checkpoint=True)
        self.summaries.append(record)
        return record

    def fail(self, source: str, message: str, partial: Optional[VideoResult]) -> dict[str, Any]:
        self._end_windows()
        record = {"schema_version": SCHEMA_VERSION, "type": "error", "source": source, "verdict": VERDICT_ERROR,
                  "score": None, "error": message,
                  "frames_analysed": partial.frames_analysed if partial is not None else 0, "finished_at": now_iso()}
        self._emit(record, checkpoint=True)
        self.summaries.append(record)
        return record

    def close(self) -> None:
        self.out.close()


class CsvSink(Sink):
    def __init__(self, path: Optional[Path], grids: bool, window_s: float, append: bool = False):
        super().__init__(grids, window_s)
        self.out = OutputStream(path, append)
        if not append:
            self._row(CSV_COLUMNS, checkpoint=True)

    def _row(self, values, checkpoint: bool = False) -> None:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(["" if v is None else v for v in values])
        self.out.write(buf.getvalue(), checkpoint)

    def _record(self, record: str, checkpoint: bool = False, **fields: Any) -> None:
        row = {"schema_version": SCHEMA_VERSION, "record": record, "source": self._source, **fields}
        self._row([row.get(c) for c in CSV_COLUMNS], checkpoint)

    def frame(self, frame: FrameResult) -> None:
        if frame.faces:
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            for k, f in enumerate(frame.faces):
                x0, y0, x1, y1 = (round(float(v), 1) for v in f.box)
                row = {"schema_version": SCHEMA_VERSION, "record": "face", "source": self._source,
                       "frame": frame.index, "time_s": round(frame.time_s, 3), "face": k, "x0": x0, "y0": y0,
                       "x1": x1, "y1": y1, "detector_score": round(float(f.detector_score), 4),
                       "score": round(float(f.score), 5), "verdict": verdict_for(f.score, self._threshold)}
                w.writerow(["" if row.get(c) is None else row.get(c) for c in CSV_COLUMNS])
            self.out.write(buf.getvalue())  # one frame's faces: one write
        super().frame(frame)

    def _window(self, window: Window, partial: bool) -> None:
        t = window.tally
        self._record("window", checkpoint=True, time_s=round(window.start_s, 3), score=_r(t.score),
                     verdict=verdict_for(t.score, self._threshold), frames=t.frames,
                     frames_with_face=t.frames_with_face,
                     note=f"window {window.number}: {window.start_s:g}-{window.end_s:g} s" + (" (partial)" * partial))

    def finish(self, result: VideoResult, extra: dict[str, Any]) -> dict[str, Any]:
        self._end_windows()
        summary = self.summary_of(result, extra)
        self._record("summary", checkpoint=True, score=summary["score"], verdict=summary["verdict"],
                     frames=summary["frames_analysed"], frames_with_face=summary["frames_with_face"],
                     note="stopped" if summary["stopped"] else "")
        self.summaries.append(summary)
        return summary

    def fail(self, source: str, message: str, partial: Optional[VideoResult]) -> dict[str, Any]:
        self._end_windows()
        self._source = source
        frames = partial.frames_analysed if partial is not None else 0
        self._record("error", checkpoint=True, verdict=VERDICT_ERROR, frames=frames, note=message)
        record = {"schema_version": SCHEMA_VERSION, "source": source, "verdict": VERDICT_ERROR, "score": None,
                  "error": message, "frames_analysed": frames}
        self.summaries.append(record)
        return record

    def close(self) -> None:
        self.out.close()


# --- resuming ---------------------------------------------------------------------------------------------------


@dataclass
class Resume:
    """What an earlier run's output holds: the inputs it finished (key -> summary record)."""

    done: dict[str, dict[str, Any]]
    previous_json: list[dict[str, Any]] = field(default_factory=list)  # json: the records to keep


def _is_done(record: dict[str, Any]) -> bool:
    return record.get("verdict") in DONE_VERDICTS and not record.get("stopped", False)


def read_done(path: Path, fmt: str, redo_keys: set[str]) -> Resume:
    """Read ``path`` (written by an earlier run in ``fmt``) and rewrite it, when needed, so it holds the records of
    the inputs it finished and of those this run leaves alone, not the partial records of the inputs in
    ``redo_keys`` that were not finished (they are redone). Raises InputError for a file this command did not
    write."""
    try:
        if not path.exists() or path.stat().st_size == 0:  # nothing written yet
            return Resume({})
        if fmt == "json":
            return _read_done_json(path, redo_keys)
        if fmt == "jsonl":
            return _read_done_jsonl(path, redo_keys)
        return _read_done_csv(path, redo_keys)
    except OSError as exc:
        raise OutputError(f"cannot resume from {path}: {exc.strerror or exc}") from None


def _read_done_json(path: Path, redo_keys: set[str]) -> Resume:
    try:
        doc = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        raise InputError(f"--skip-done: {path} is not a JSON result of aunet-infer") from None
    records = doc if isinstance(doc, list) else [doc]
    if not all(isinstance(r, dict) and "source" in r and "verdict" in r for r in records):
        raise InputError(f"--skip-done: {path} is not a JSON result of aunet-infer")
    done = {source_key(r["source"]): r for r in records if _is_done(r)}
    keep = [r for r in records if source_key(r["source"]) in done or source_key(r["source"]) not in redo_keys]
    return Resume(done, keep)


def _whole_lines(path: Path) -> Iterator[bytes]:
    """The file's lines, streamed; a last line without its newline was cut off by a crash and is not given."""
    with open(path, "rb") as f:
        for raw in f:
            if raw.endswith(b"\n"):
                yield raw


def _read_done_jsonl(path: Path, redo_keys: set[str]) -> Resume:
    done: dict[str, dict[str, Any]] = {}
    keys: list[Optional[str]] = []  # per whole line: its input, None for a line that is not a record of ours
    for raw in _whole_lines(path):
        try:
            r = json.loads(raw)
        except ValueError:
            r = None
        if not (isinstance(r, dict) and "schema_version" in r and isinstance(r.get("source"), str)):
            keys.append(None)
            continue
        key = source_key(r["source"])
        keys.append(key)
        if r.get("type") == "summary" and _is_done(r):
            done[key] = r
    if keys and all(k is None for k in keys):
        raise InputError(f"--skip-done: {path} holds no aunet-infer JSONL records")
    _keep_lines(path, [k is not None and (k in done or k not in redo_keys) for k in keys])
    return Resume(done)


def _read_done_csv(path: Path, redo_keys: set[str]) -> Resume:
    col = {c: i for i, c in enumerate(CSV_COLUMNS)}
    done: dict[str, dict[str, Any]] = {}
    keys: list[Optional[str]] = []
    for n, raw in enumerate(_whole_lines(path)):
        row = next(csv.reader([raw.decode("utf-8", errors="replace")]), [])
        if n == 0:
            if tuple(row) != CSV_COLUMNS:
                raise InputError(f"--skip-done: {path} is not a CSV result of aunet-infer (its header differs)")
            keys.append("")  # the header: kept
            continue
        if len(row) != len(CSV_COLUMNS):
            keys.append(None)
            continue
        key = source_key(row[col["source"]])
        keys.append(key)
        if row[col["record"]] == "summary" and row[col["verdict"]] in DONE_VERDICTS and row[col["note"]] != "stopped":
            done[key] = {"source": row[col["source"]], "verdict": row[col["verdict"]],
                         "score": float(row[col["score"]]) if row[col["score"]] else None}
    if not keys:
        raise InputError(f"--skip-done: {path} holds no complete line: not a CSV result of aunet-infer")
    _keep_lines(path, [k == "" or (k is not None and (k in done or k not in redo_keys)) for k in keys])
    return Resume(done)


def _keep_lines(path: Path, keep: list[bool]) -> None:
    """Atomically rewrite ``path`` with the whole lines ``keep`` marks, unless that is the file as it is."""
    whole = 0
    for raw in _whole_lines(path):
        whole += len(raw)
    if all(keep) and whole == path.stat().st_size:
        return
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        for raw, k in zip(_whole_lines(path), keep):
            if k:
                out.write(raw)


def check_writable(path: Path) -> None:
    """Refuse early an output that cannot be written (a folder, a parent that is a file, no permission), so a
    long run does not fail at its end. Makes the parent folders, as the writers would."""
    try:
        if path.is_dir():
            raise OutputError(f"cannot write {path}: it is a folder")
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and not os.access(path, os.W_OK):
            raise OutputError(f"cannot write {path}: permission denied")
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OutputError:
        raise
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None


def check_writable_folder(folder: Path) -> None:
    try:
        if folder.exists() and not folder.is_dir():
            raise OutputError(f"cannot write into {folder}: it is a file, not a folder")
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OutputError:
        raise
    except OSError as exc:
        raise OutputError(f"cannot write into {folder}: {exc.strerror or exc}") from None
