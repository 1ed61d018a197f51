"""Streaming output and live sources: JSONL/CSV records as frames are scored, verdict windows, bounded memory on
live sources, a camera that drops, Ctrl-C and a killed process keeping what was written, --skip-done, unwritable
outputs, images and image sequences as inputs, seeking instead of decoding, and the H.264 annotated video."""
from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from aunet.demo.sample_data import astronaut, make_sample_video, no_face_image, write_image
from aunet.runtime import outputs
from aunet.runtime.annotate import AnnotatedVideoWriter, NoH264Warning, h264_encoder
from aunet.runtime.errors import InputError, OutputError, SourceLost
from aunet.runtime.outputs import CSV_COLUMNS, OutputStream, Windows, read_done, source_key
from aunet.runtime.results import SCHEMA_VERSION, FaceResult, FrameResult, VideoResult
from aunet.runtime.sources import Sampling, Seeker, VideoSource, even_indices, resolve_inputs

# --- helpers ----------------------------------------------------------------------------------------------------


def stamped_video(path, frames: int, size=(96, 64), fps=25.0):
    """A video whose frame i shows i in binary (8 px blocks, 10 bits): the frame a reader got can be checked."""
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for i in range(frames):
        img = np.full((h, w, 3), 128, np.uint8)
        for b in range(10):
            img[0:8, b * 8:(b + 1) * 8] = 255 if (i >> b) & 1 else 0
        writer.write(img)
    writer.release()
    return path


def stamp_of(rgb) -> int:
    blocks = rgb[1:7, :80].reshape(6, 10, 8, 3)[:, :, 1:7].mean(axis=(0, 2, 3))
    return int(sum(1 << b for b in range(10) if blocks[b] > 128))


class FakeCapture:
    """cv2.VideoCapture stand-in for a camera or stream: ``frames`` cycled; after ``fail_after`` frames grab()
    fails (``mode`` "false": returns False, as a dropped stream does; "raise": raises cv2.error); ``on_grab``
    is called with the frame count (a test sends itself Ctrl-C from there)."""

    def __init__(self, frames, fail_after=None, mode="false", on_grab=None, fps=25.0):
        self.frames, self.fail_after, self.mode, self.on_grab, self.fps = frames, fail_after, mode, on_grab, fps
        self.grabbed = 0
        self.released = False

    def isOpened(self):
        return True

    def get(self, prop):
        h, w = self.frames[0].shape[:2]
        return {cv2.CAP_PROP_FPS: self.fps, cv2.CAP_PROP_FRAME_COUNT: -1, cv2.CAP_PROP_FRAME_WIDTH: w,
                cv2.CAP_PROP_FRAME_HEIGHT: h, cv2.CAP_PROP_POS_FRAMES: self.grabbed}.get(prop, 0.0)

    def set(self, prop, value):
        return False

    def grab(self):
        if self.fail_after is not None and self.grabbed >= self.fail_after:
            if self.mode == "raise":
                raise cv2.error("camera unplugged")
            return False
        self.grabbed += 1
        if self.on_grab is not None:
            self.on_grab(self.grabbed)
        return True

    def retrieve(self):
        return True, self.frames[(self.grabbed - 1) % len(self.frames)].copy()

    def release(self):
        self.released = True


def install_camera(monkeypatch, **kwargs):
    """Every cv2.VideoCapture the runtime opens is a FakeCapture of the sample face frames."""
    frames = kwargs.pop("frames")
    made = []

    def factory(*args, **kw):
        made.append(FakeCapture(frames, **kwargs))
        return made[-1]

    monkeypatch.setattr(cv2, "VideoCapture", factory)
    return made


def frame(index: int, t: float, scores) -> FrameResult:
    faces = [FaceResult(np.array([0, 0, 10, 10], np.float32), 1.0, s, np.zeros((2, 2), np.float16), np.eye(2, 3))
             for s in scores]
    return FrameResult(index, t, faces)


def jsonl(path):
    text = path.read_text()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


# --- units: windows, tallies, the output stream, resuming -------------------------------------------------------


def test_windows_cut_live_frames_by_time_and_report_only_windows_with_frames():
    w = Windows(10.0)
    assert w.add(frame(0, 0.5, [0.2])) is None and w.add(frame(1, 9.9, [0.9])) is None
    first = w.add(frame(2, 10.0, []))  # 10.0 s opens window 1 and closes window 0
    r0 = first.record("cam", 0.5)
    assert (r0["window"], r0["start_s"], r0["end_s"], r0["frames"], r0["frames_with_face"]) == (0, 0.0, 10.0, 2, 2)
    assert r0["score"] == pytest.approx(0.55) and r0["max_score"] == pytest.approx(0.9) and r0["verdict"] == "fake"
    assert r0["schema_version"] == SCHEMA_VERSION and r0["partial"] is False
    second = w.add(frame(3, 35.0, [0.4, 0.6]))  # windows 2 (no frame) is skipped
    r1 = second.record("cam", 0.5)
    assert (r1["window"], r1["frames"], r1["frames_with_face"], r1["verdict"]) == (1, 1, 0, "no_face")
    last = w.flush()
    assert last.number == 3 and last.tally.frames == 1 and last.tally.score == pytest.approx(0.6)
    assert w.flush() is None


def test_a_live_result_keeps_aggregates_not_frames():
    frames = [frame(i, i / 10, s) for i, s in enumerate([[0.2, 0.9], [], [0.4], [0.1]])]
    kept = VideoResult("v", 0.5)
    bounded = VideoResult("v", 0.5, keep_frames=False)
    for f in frames:
        kept.add(f)
        bounded.add(f)
    assert bounded.frames == [] and len(kept.frames) == 4
    assert bounded.score == pytest.approx(kept.score) == pytest.approx((0.9 + 0.4 + 0.1) / 3)
    assert (bounded.frames_analysed, bounded.frames_with_face, bounded.tally.faces) == (4, 3, 4)
    d = bounded.to_dict()
    assert "frames" not in d and "frame_scores" not in d and d["frames_analysed"] == 4
    assert d["schema_version"] == SCHEMA_VERSION and d["verdict"] == kept.verdict


def test_output_stream_writes_each_record_in_one_call_and_fsyncs_at_checkpoints(tmp_path, monkeypatch):
    writes, syncs = [], []
    real_write = os.write
    monkeypatch.setattr(outputs.os, "write", lambda fd, data: writes.append(bytes(data)) or real_write(fd, data))
    monkeypatch.setattr(outputs.os, "fsync", lambda fd: syncs.append(fd))
    monkeypatch.setattr(outputs, "FSYNC_INTERVAL_S", 3600.0)
    path = tmp_path / "o.jsonl"
    path.write_text("old\n")
    stream = OutputStream(path)
    big = json.dumps({"grid": list(range(5000))}) + "\n"  # larger than any buffer
    stream.write(big)
    assert writes == [big.encode()] and syncs == []
    stream.write("x\n", checkpoint=True)
    assert len(syncs) == 1
    stream.close()
    assert path.read_text() == big + "x\n"  # truncated the old content
    again = OutputStream(path, append=True)
    again.write("y\n")
    again.close()
    assert path.read_text().endswith("x\ny\n")


def test_output_stream_failure_is_an_output_error(tmp_path, monkeypatch):
    import errno

    stream = OutputStream(tmp_path / "o.jsonl")

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(outputs.os, "write", full)
    with pytest.raises(OutputError, match="No space left on device"):
        stream.write("x\n")
    with pytest.raises(OutputError):
        OutputStream(tmp_path / "o.jsonl" / "below-a-file.jsonl")


def _line(**r):
    return json.dumps({"schema_version": SCHEMA_VERSION, **r}) + "\n"


def test_read_done_jsonl_counts_only_complete_unstopped_summaries(tmp_path):
    a, b, c, d = (str(tmp_path / f"{n}.mp4") for n in "abcd")
    path = tmp_path / "out.jsonl"
    path.write_text(
        _line(type="start", source=a) + _line(type="frame", source=a, index=0)
        + _line(type="summary", source=a, verdict="real", score=0.1, stopped=False)
        + _line(type="start", source=b) + _line(type="summary", source=b, verdict="fake", score=0.9, stopped=True)
        + _line(type="start", source=d) + _line(type="error", source=d, verdict="error")
        + _line(type="start", source=c) + _line(type="frame", source=c, index=0)
        + '{"schema_version": 1, "type": "summary", "source": "' + c + '", "verdict": "re'  # cut off by a crash
    )
    resume = read_done(path, "jsonl", redo_keys={source_key(x) for x in (a, b, c)})
    assert set(resume.done) == {source_key(a)}
    kept = jsonl(path)  # whole lines only now: a's records, and d's (not redone by this run)
    assert [(r["source"], r["type"]) for r in kept] == [(a, "start"), (a, "frame"), (a, "summary"), (d, "start"),
                                                          (d, "error")]
    with pytest.raises(InputError):
        (tmp_path / "foreign.jsonl").write_text("hello\nworld\n")
        read_done(tmp_path / "foreign.jsonl", "jsonl", set())
    assert read_done(tmp_path / "missing.jsonl", "jsonl", set()).done == {}


def test_read_done_csv_needs_our_header_and_drops_a_cut_row(tmp_path):
    a, b = str(tmp_path / "a.png"), str(tmp_path / "b.png")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    w.writerow([1, "face", a, 0, 0.0, 0, 1, 2, 3, 4, 1.0, 0.7, "fake", "", "", ""])
    w.writerow([1, "summary", a, "", "", "", "", "", "", "", "", 0.7, "fake", 1, 1, ""])
    w.writerow([1, "face", b, 0, 0.0, 0, 1, 2, 3, 4, 1.0, 0.2, "real", "", "", ""])
    path = tmp_path / "out.csv"
    path.write_text(buf.getvalue() + f"1,summary,{b},,,,,,,")  # b's summary cut off
    resume = read_done(path, "csv", {source_key(a), source_key(b)})
    assert set(resume.done) == {source_key(a)} and resume.done[source_key(a)]["verdict"] == "fake"
    rows = list(csv.reader(io.StringIO(path.read_text())))
    assert tuple(rows[0]) == CSV_COLUMNS and [r[2] for r in rows[1:]] == [a, a]
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(InputError, match="header"):
        read_done(bad, "csv", set())


def test_read_done_json_keeps_finished_records(tmp_path):
    a, b = str(tmp_path / "a.mp4"), str(tmp_path / "b.mp4")
    path = tmp_path / "out.json"
    path.write_text(json.dumps([{"source": a, "verdict": "real", "score": 0.1},
                                {"source": b, "verdict": "error", "score": None, "error": "x"}]))
    resume = read_done(path, "json", {source_key(a), source_key(b)})
    assert set(resume.done) == {source_key(a)} and [r["source"] for r in resume.previous_json] == [a]
    path.write_text("{not json")
    with pytest.raises(InputError):
        read_done(path, "json", set())


# --- sources: images, sequences, seeking, live streams -----------------------------------------------------------


def test_a_folder_gives_its_videos_and_images_and_a_pattern_is_one_sequence(tmp_path):
    folder = tmp_path / "in"
    video = make_sample_video(folder / "clip.mp4", frames=2, size=(160, 120))
    imgs = [write_image(folder / "photos" / f"p{i}.jpg", astronaut()) for i in range(2)]
    (folder / "notes.txt").write_text("x")
    assert resolve_inputs([str(folder)]) == [str(video)] + [str(p) for p in imgs]
    seq = tmp_path / "seq"
    for i in range(3):
        img = np.full((48, 64, 3), 40 * i + 20, np.uint8)
        write_image(seq / f"f_{i:03d}.png", img)
    pattern = str(seq / "f_%03d.png")
    assert resolve_inputs([pattern]) == [pattern]
    got = list(VideoSource(pattern).frames())
    assert [i for i, _, _ in got] == [0, 1, 2]
    assert [int(rgb.mean()) for _, _, rgb in got] == [20, 60, 100]
    assert [i for i, _, _ in VideoSource(pattern, Sampling(frames=2)).frames()] == [0, 2]  # counted: spread


def test_seeking_lands_on_exactly_the_frames_grabbing_gives(tmp_path):
    path = stamped_video(tmp_path / "long.mp4", 600)
    for sampling in (Sampling(frames=7), Sampling(every=97), Sampling(frames=200)):
        runs = {}
        for policy in ("never", "always", "auto"):
            src = VideoSource(path, sampling, seek=policy)
            runs[policy] = list(src.frames())
            if policy == "always":
                assert src.seeker.seeks > 0
        want = even_indices(600, sampling.frames).tolist() if sampling.frames else list(range(0, 600, 97))
        for policy, got in runs.items():
            assert [i for i, _, _ in got] == want, policy
            assert [stamp_of(rgb) for _, _, rgb in got] == want, policy  # the pixels are that frame's
            assert all(np.array_equal(a[2], b[2]) for a, b in zip(got, runs["never"])), policy
            assert [t for _, t, _ in got] == pytest.approx([i / 25.0 for i in want])
    src = VideoSource(path, Sampling(frames=7))
    list(src.frames())
    assert src.seeker.seeks >= 1  # auto: long gaps are seeked, not decoded


def test_seeker_weighs_measured_costs():
    s = Seeker("auto", probe_gap=32)
    assert not s.should_seek(10) and s.should_seek(40)  # nothing measured: probe long gaps
    s.record_seek(0.2)
    assert not s.should_seek(1000)  # grabbing not measured yet: measure it once
    s.record_grabs(100, 0.1)  # 1 ms per grab
    assert s.should_seek(300) and not s.should_seek(150)
    assert not Seeker("never").should_seek(10**6) and Seeker("always").should_seek(1)


def test_a_seek_that_does_not_land_falls_back_to_grabbing(tmp_path, monkeypatch):
    path = stamped_video(tmp_path / "v.mp4", 300)
    real = cv2.VideoCapture

    class Liar:
        def __init__(self, *a, **k):
            self.cap = real(*a, **k)

        def get(self, prop):
            v = self.cap.get(prop)
            return v + 3 if prop == cv2.CAP_PROP_POS_FRAMES and v > 0 else v

        def __getattr__(self, name):
            return getattr(self.cap, name)

    monkeypatch.setattr(cv2, "VideoCapture", Liar)
    src = VideoSource(path, Sampling(frames=4), seek="always")
    got = list(src.frames())
    assert [stamp_of(rgb) for _, _, rgb in got] == [i for i, _, _ in got] == even_indices(300, 4).tolist()
    assert src.seeker.policy == "never"


def test_a_live_source_that_drops_raises_source_lost_after_its_frames(monkeypatch):
    frames = [np.full((48, 64, 3), 7, np.uint8)]
    for mode in ("false", "raise"):
        install_camera(monkeypatch, frames=frames, fail_after=5, mode=mode)
        src = VideoSource("rtsp://cam/stream")
        got = []
        with pytest.raises(SourceLost, match="after 5"):
            for item in src.frames():
                got.append(item)
        assert len(got) == 5 and src.live
        times = [t for _, t, _ in got]
        assert times == sorted(times) and times[0] >= 0  # seconds since the stream opened
    install_camera(monkeypatch, frames=frames, fail_after=5)
    assert len(list(VideoSource(0, Sampling(frames=3)).frames())) == 3  # N frames asked, N read: no loss


# --- annotated video -----------------------------------------------------------------------------------------------


def _codec_of(path) -> str:
    cap = cv2.VideoCapture(str(path))
    fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode("latin-1").lower()
    cap.release()
    return fourcc


def test_annotated_video_is_h264_and_pads_odd_sizes(tmp_path):
    pytest.importorskip("av")
    assert h264_encoder() is not None, "this PyAV has no H.264 encoder"
    out = tmp_path / "a.mp4"
    writer = AnnotatedVideoWriter(out, 10.0, 0.5, 112)
    for i in range(5):
        writer.write(np.full((61, 81, 3), 30 * i, np.uint8), FrameResult(i, i / 10, []))
    writer.close()
    assert writer.codec == "h264" and _codec_of(out) in ("h264", "avc1")
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 5 and int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == 82
    cap.release()
    head = out.read_bytes()[:4096]
    assert b"moov" in head  # +faststart: playable while it downloads
    partial = AnnotatedVideoWriter(tmp_path / "p.mp4", 10.0, 0.5, 112)
    partial.write(np.zeros((64, 64, 3), np.uint8), FrameResult(0, 0.0, []))
    partial.close(ok=False)
    assert list(tmp_path.iterdir()) == [out]


def test_annotated_video_without_h264_warns_and_falls_back(tmp_path, monkeypatch):
    from aunet.runtime import annotate

    monkeypatch.setattr(annotate, "h264_encoder", lambda: None)
    with pytest.warns(NoH264Warning):
        writer = AnnotatedVideoWriter(tmp_path / "a.mp4", 10.0, 0.5, 112)
    for i in range(3):
        writer.write(np.zeros((48, 64, 3), np.uint8), FrameResult(i, 0.0, []))
    writer.close()
    assert writer.codec == "mp4v" and _codec_of(tmp_path / "a.mp4") in ("mp4v", "fmp4")  # MPEG-4 Part 2
    with pytest.raises(InputError, match="H.264"):
        AnnotatedVideoWriter(tmp_path / "b.mp4", 10.0, 0.5, 112, codec="h264")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        AnnotatedVideoWriter(tmp_path / "c.avi", 10.0, 0.5, 112)  # MJPG: nothing to warn about


# --- the CLI with a model ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def onnx(torch, tmp_path_factory):
    """The small model's ONNX (export needs torch; the runtime never does)."""
    pytest.importorskip("onnxruntime")
    from aunet.export.onnx_export import export_onnx

    import aunet

    path = tmp_path_factory.getbasetemp() / "runtime-small.onnx"  # shared with test_runtime_pipeline
    if not path.exists():
        torch.manual_seed(0)
        export_onnx(aunet.build_model("small").eval(), path)
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return make_sample_video(tmp_path_factory.mktemp("video") / "face.mp4", frames=10, fps=10.0, size=(480, 360))


@pytest.fixture(scope="module")
def face_frames(video):
    return [cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) for _, _, rgb in VideoSource(video).frames()]


def run_cli(*args):
    from aunet.runtime.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def one_error(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("aunet-infer: error: "), stderr
    return lines[0]


def test_jsonl_and_csv_stream_what_json_reports(onnx, video, tmp_path):
    res = run_cli(video, "--engine", onnx, "--every", "2", "--quiet", "--out", tmp_path / "r.json")
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["schema_version"] == SCHEMA_VERSION

    res = run_cli(video, "--engine", onnx, "--every", "2", "--quiet", "--format", "jsonl", "--out",
                  tmp_path / "r.jsonl")
    assert res.exit_code == 0, res.output
    records = jsonl(tmp_path / "r.jsonl")
    assert all(r["schema_version"] == SCHEMA_VERSION and r["source"] == str(video) for r in records)
    assert [r["type"] for r in records] == ["start"] + ["frame"] * 5 + ["summary"]
    frames = [r for r in records if r["type"] == "frame"]
    assert [f["index"] for f in frames] == [f["index"] for f in doc["frames"]] == [0, 2, 4, 6, 8]
    assert [f["score"] for f in frames] == doc["frame_scores"]
    assert frames[0]["faces"][0]["region_grid"] == doc["frames"][0]["faces"][0]["region_grid"]
    summary = records[-1]
    assert (summary["verdict"], summary["score"], summary["frames_analysed"]) == (doc["verdict"], doc["score"], 5)
    assert summary["stopped"] is False and "frames" not in summary
    assert records[0]["model_spec"] == doc["model_spec"] and records[0]["live"] is False

    res = run_cli(video, "--engine", onnx, "--every", "2", "--quiet", "--format", "csv")  # to stdout
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    faces = [r for r in rows if r["record"] == "face"]
    assert len(faces) == doc["faces"] == 5 and [int(r["frame"]) for r in faces] == [0, 2, 4, 6, 8]
    assert [float(r["score"]) for r in faces] == pytest.approx([f["faces"][0]["score"] for f in doc["frames"]])
    assert [float(v) for v in (faces[0][k] for k in ("x0", "y0", "x1", "y1"))] == doc["frames"][0]["faces"][0]["box"]
    assert rows[-1]["record"] == "summary" and rows[-1]["verdict"] == doc["verdict"]
    assert all(r["schema_version"] == str(SCHEMA_VERSION) for r in rows)


def test_a_camera_that_drops_keeps_every_scored_frame_and_exits_5(onnx, face_frames, tmp_path, monkeypatch):
    """The camera delivers 11 frames, then fails: 11 frame records (batches of 8: the 3 left over are scored
    too), the windows account for all of them, an error record ends the input, one error line, exit 5."""
    for mode in ("false", "raise"):
        install_camera(monkeypatch, frames=face_frames, fail_after=11, mode=mode)
        out = tmp_path / f"cam-{mode}.jsonl"
        res = run_cli("rtsp://camera/stream", "--engine", onnx, "--format", "jsonl", "--out", out, "--quiet",
                      "--window", "3600")
        assert res.exit_code == 5, res.output
        assert "rtsp://camera/stream" in one_error(res.stderr) and "11" in res.stderr
        records = jsonl(out)
        kinds = [r["type"] for r in records]
        assert kinds == ["start"] + ["frame"] * 11 + ["window", "error"], kinds
        assert [r["index"] for r in records if r["type"] == "frame"] == list(range(11))
        window = records[-2]
        assert window["frames"] == 11 and window["partial"] is True and records[-1]["frames_analysed"] == 11
        assert records[0]["live"] is True


def test_csv_on_a_live_source_has_face_window_and_error_rows(onnx, face_frames, tmp_path, monkeypatch):
    install_camera(monkeypatch, frames=face_frames, fail_after=4)
    out = tmp_path / "cam.csv"
    res = run_cli("0", "--engine", onnx, "--format", "csv", "--out", out, "--quiet")
    assert res.exit_code == 5, res.output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["record"] for r in rows] == ["face"] * 4 + ["window", "error"]
    assert rows[-2]["frames"] == "4" and rows[0]["source"] == "webcam:0"


def test_json_refuses_an_unbounded_live_source_before_loading_the_model(tmp_path):
    garbage = tmp_path / "model.onnx"
    garbage.write_bytes(b"garbage")
    res = run_cli("rtsp://camera/stream", "--engine", garbage, "--quiet")
    assert res.exit_code == 2 and res.stdout == ""
    line = one_error(res.stderr)
    assert "live source" in line and "--format jsonl" in line and "--frames" in line


def test_ctrl_c_on_a_live_source_writes_a_stopped_summary_and_exits_130(onnx, face_frames, tmp_path, monkeypatch):
    out = tmp_path / "cam.jsonl"
    sent = []

    def ctrl_c(n):  # once 3 frames are on disk, as a person watching the output would
        if not sent and out.exists() and out.read_text().count('"type":"frame"') >= 3:
            sent.append(n)
            os.kill(os.getpid(), signal.SIGINT)

    install_camera(monkeypatch, frames=face_frames, on_grab=ctrl_c)  # endless until Ctrl-C
    res = run_cli("rtsp://camera/stream", "--engine", onnx, "--format", "jsonl", "--out", out, "--quiet")
    assert res.exit_code == 130, res.output
    records = jsonl(out)
    summary = records[-1]
    frames = [r for r in records if r["type"] == "frame"]
    assert summary["type"] == "summary" and summary["stopped"] is True
    assert summary["frames_analysed"] == len(frames) >= 3 and len(sent) == 1
    assert sum(r["frames"] for r in records if r["type"] == "window") == len(frames)


def test_predict_video_keeps_no_frames_for_a_live_source(onnx, face_frames, monkeypatch):
    from aunet.runtime import Detector

    install_camera(monkeypatch, frames=face_frames, fail_after=20)
    seen = []
    with Detector(onnx, device="cpu") as det:
        with pytest.raises(SourceLost) as exc:
            det.predict_video("rtsp://camera/stream", on_frame=lambda f, _: seen.append(f.index))
        partial = exc.value.partial
        assert seen == list(range(20)) and partial.frames == [] and partial.frames_analysed == 20
        assert partial.frames_with_face == 20 and partial.score is not None
        install_camera(monkeypatch, frames=face_frames)
        bounded = det.predict_video("rtsp://camera/stream", Sampling(frames=3))  # bounded: kept
        assert len(bounded.frames) == 3


def test_skip_done_redoes_only_unfinished_inputs(onnx, video, tmp_path):
    folder = tmp_path / "batch"
    inputs = [write_image(folder / "a.png", astronaut()), write_image(folder / "b.png", no_face_image()),
              make_sample_video(folder / "c.mp4", frames=3, size=(320, 240))]
    for fmt in ("jsonl", "csv", "json"):
        out = tmp_path / f"out.{fmt}"
        res = run_cli(folder, "--engine", onnx, "--format", fmt, "--out", out, "--quiet")
        assert res.exit_code == 0, res.output
        full = out.read_text()
        if fmt == "jsonl":  # a crash in the middle of c.mp4: its summary never written, its last line cut off
            lines = full.splitlines(keepends=True)
            cut = [ln for ln in lines if not (str(inputs[2]) in ln and '"summary"' in ln)]
            out.write_text("".join(cut) + cut[-1][: len(cut[-1]) // 2])
        elif fmt == "csv":
            rows = full.splitlines(keepends=True)
            out.write_text("".join(r for r in rows if not (r.startswith("1,summary,") and str(inputs[2]) in r)))
        else:  # a Ctrl-C during c.mp4: recorded as stopped
            doc = json.loads(full)
            doc[2]["stopped"] = True
            out.write_text(json.dumps(doc))
        res = run_cli(folder, "--engine", onnx, "--format", fmt, "--out", out, "--skip-done")
        assert res.exit_code == 0, res.output
        assert "2 of 3 inputs already done" in res.stderr
        if fmt == "jsonl":
            records = jsonl(out)
            starts = [r["source"] for r in records if r["type"] == "start"]
            summaries = [r["source"] for r in records if r["type"] == "summary"]
            assert sorted(starts) == sorted(summaries) == sorted(str(p) for p in inputs)  # each once
            assert len([r for r in records if r["type"] == "frame" and r["source"] == str(inputs[2])]) == 3
        elif fmt == "csv":
            rows = list(csv.DictReader(io.StringIO(out.read_text())))
            assert sorted(r["source"] for r in rows if r["record"] == "summary") == sorted(str(p) for p in inputs)
        else:
            doc = json.loads(out.read_text())
            assert sorted(r["source"] for r in doc) == sorted(str(p) for p in inputs)
            assert not any(r["stopped"] for r in doc)
        res = run_cli(folder, "--engine", onnx, "--format", fmt, "--out", out, "--skip-done", "--quiet")
        assert res.exit_code == 0 and res.stdout == ""  # all done: nothing runs


def test_skip_done_and_unwritable_outputs_are_refused_before_the_model_loads(tmp_path, video):
    garbage = tmp_path / "model.onnx"
    garbage.write_bytes(b"garbage")
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    for args, text in (
        (["--out", blocker / "r.jsonl", "--format", "jsonl"], "cannot write"),
        (["--out", tmp_path], "it is a folder"),
        (["--save-video", blocker / "a.mp4"], "cannot write"),
        (["--skip-done"], "--skip-done needs --out"),
    ):
        res = run_cli(video, "--engine", garbage, "--quiet", *args)
        assert res.exit_code == 2 and res.stdout == "", (args, res.output)
        assert text in one_error(res.stderr) and "garbage" not in res.stderr
    (tmp_path / "foreign.csv").write_text("a,b\n")
    res = run_cli(video, "--engine", garbage, "--format", "csv", "--out", tmp_path / "foreign.csv", "--skip-done")
    assert res.exit_code == 2 and "not a CSV result of aunet-infer" in one_error(res.stderr)


def test_image_inputs_are_annotated_as_images(onnx, tmp_path):
    folder = tmp_path / "photos"
    write_image(folder / "a.png", astronaut())
    write_image(folder / "b.jpg", astronaut()[:, ::-1])
    res = run_cli(folder, "--engine", onnx, "--save-video", tmp_path / "annotated", "--quiet", "--no-grids")
    assert res.exit_code == 0, res.output
    records = json.loads(res.stdout)
    assert [r["frames_with_face"] for r in records] == [1, 1]
    paths = sorted((tmp_path / "annotated").iterdir())
    assert [p.name for p in paths] == ["a.annotated.png", "b.annotated.jpg"]
    assert cv2.imread(str(paths[0])).shape == (512, 512, 3)
    assert [r["annotated_video"] for r in records] == [str(p) for p in paths]


def test_a_killed_process_leaves_only_whole_records(onnx, face_frames, tmp_path):
    """SIGKILL in the middle of a live run: every line on disk is a whole record (no partial line to repair)."""
    frames_npy = tmp_path / "frames.npy"
    np.save(frames_npy, np.stack(face_frames[:4]))
    out = tmp_path / "live.jsonl"
    script = textwrap.dedent(f"""
        import sys, cv2, numpy as np
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_runtime_streaming import FakeCapture
        frames = list(np.load({str(frames_npy)!r}))
        cv2.VideoCapture = lambda *a, **k: FakeCapture(frames)  # a camera that never ends
        from aunet.runtime.cli import main
        main(["rtsp://camera/stream", "--engine", {str(onnx)!r}, "--format", "jsonl", "--out", {str(out)!r},
              "--quiet", "--window", "0.5", "--batch", "2"])
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if out.exists() and out.read_text().count('"type":"frame"') >= 6:
                break
            if proc.poll() is not None:
                pytest.fail(f"exited early: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.2)
        else:
            pytest.fail("no frames written in time")
    finally:
        proc.kill()
        proc.wait(30)
    text = out.read_text()
    assert text.endswith("\n")
    records = [json.loads(line) for line in text.splitlines()]
    frames = [r for r in records if r["type"] == "frame"]
    assert len(frames) >= 6 and [f["index"] for f in frames] == list(range(len(frames)))
    assert records[0]["type"] == "start"


def test_json_on_a_bounded_stream_that_drops_keeps_the_scored_frames(onnx, face_frames, monkeypatch):
    install_camera(monkeypatch, frames=face_frames, fail_after=3)
    res = run_cli("rtsp://camera/stream", "--engine", onnx, "--frames", "10", "--quiet", "--no-grids")
    assert res.exit_code == 5, res.output
    record = json.loads(res.stdout)
    assert record["verdict"] == "error" and "after 3" in record["error"]
    assert [f["index"] for f in record["frames"]] == [0, 1, 2] and record["frames_analysed"] == 3
    one_error(res.stderr)


def test_a_disk_that_fills_mid_run_stops_with_one_line_and_exit_2(onnx, video, tmp_path, monkeypatch):
    import errno

    real_write, calls = os.write, []

    def filling(fd, data):
        calls.append(len(data))
        if len(calls) > 3:  # start + 2 frames fit, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(outputs.os, "write", filling)
    out = tmp_path / "r.jsonl"
    res = run_cli(video, video, "--engine", onnx, "--format", "jsonl", "--out", out, "--quiet")
    assert res.exit_code == 2, res.output
    assert "No space left on device" in one_error(res.stderr) and str(out) in res.stderr
    records = jsonl(out)
    assert [r["type"] for r in records] == ["start", "frame", "frame"]  # what was written stays whole
