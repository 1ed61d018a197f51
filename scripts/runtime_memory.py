"""Is `aunet-infer`'s memory flat on a live source? Runs the real CLI (`--format jsonl`) on a looped "camera" for
many frames and prints the resident-memory trend: a benchmark that prints a table, not a test.

The camera is cv2.VideoCapture replaced, in this process, by one that loops the frames of a face video (made on
the fly at --size, or --video) forever, as an RTSP stream that never ends; after --frames analysed frames the
script presses Ctrl-C (SIGINT to itself), which is how a live run ends. RSS is sampled every --rss-interval s
beside the number of frames analysed so far; the growth is the least-squares slope after the first quarter
(warm-up: arenas, the backend's first batches), reported per 1000 analysed frames and per hour of a 25 fps
stream, and for each later quarter of the run on its own (memory that levels off shows falling slopes). ``--compare-json`` also runs ``--format json --frames N`` on the same source, which keeps every frame's
result, to show what the check measures.

    python scripts/runtime_memory.py --engine model.onnx --frames 3000 --every 25 --size 1280x720
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from aunet.bench.measure import current_rss_mb, machine_info


class LoopedCamera:
    """A cv2.VideoCapture stand-in: ``frames`` (BGR) forever, at ``fps``; counts grabs."""

    grabbed = 0

    def __init__(self, frames: list[np.ndarray], fps: float = 25.0):
        self.frames, self.fps = frames, fps

    def isOpened(self) -> bool:
        return True

    def get(self, prop):
        h, w = self.frames[0].shape[:2]
        return {cv2.CAP_PROP_FPS: self.fps, cv2.CAP_PROP_FRAME_COUNT: -1, cv2.CAP_PROP_FRAME_WIDTH: w,
                cv2.CAP_PROP_FRAME_HEIGHT: h}.get(prop, 0.0)

    def set(self, prop, value) -> bool:
        return False

    def grab(self) -> bool:
        LoopedCamera.grabbed += 1
        return True

    def retrieve(self):
        return True, self.frames[LoopedCamera.grabbed % len(self.frames)]

    def release(self) -> None:
        pass


def sample_frames(size: tuple[int, int], video: str | None, n: int = 16) -> list[np.ndarray]:
    if video is None:
        from aunet.demo.sample_data import make_sample_video

        video = str(make_sample_video(Path(tempfile.mkdtemp()) / "face.mp4", frames=n, size=size))
    cap = cv2.VideoCapture(video)
    frames = []
    while len(frames) < n:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(bgr)
    cap.release()
    if not frames:
        raise SystemExit(f"no frames in {video}")
    return frames


def run_live(engine: str, frames: list[np.ndarray], n_frames: int, every: int, fmt: str, interval: float,
             extra: list[str]) -> dict:
    """One `aunet-infer rtsp://loop` run in this process until ``n_frames`` are analysed; the RSS samples.
    JSON needs a bounded source (``--frames``), which cannot be combined with ``--every``: it analyses every
    frame."""
    from aunet.runtime.cli import main

    every = 1 if fmt == "json" else every

    out = Path(tempfile.mkdtemp()) / f"live.{fmt}"
    cv2.VideoCapture = lambda *a, **k: LoopedCamera(frames)  # noqa: E731 - the runtime opens "the camera"
    LoopedCamera.grabbed = 0
    samples: list[tuple[float, int, float]] = []
    done = threading.Event()

    def sampler() -> None:
        t0 = time.perf_counter()
        sent = False
        while not done.wait(interval):
            analysed = LoopedCamera.grabbed // every
            samples.append((time.perf_counter() - t0, analysed, current_rss_mb()))
            if analysed >= n_frames and not sent:
                os.kill(os.getpid(), signal.SIGINT)  # the way a live run ends
                sent = True

    thread = threading.Thread(target=sampler, daemon=True)
    args = ["rtsp://loop/stream", "--engine", engine, "--format", fmt, "--out", str(out), "--quiet", *extra]
    if fmt == "json":  # bounded (--frames, not with --every), so JSON is allowed; stopped by Ctrl-C first
        args += ["--frames", str(n_frames + 100)]
    else:
        args += ["--every", str(every)]
    t0 = time.perf_counter()
    thread.start()
    try:
        main(args)
    except SystemExit as exc:
        code = exc.code
    finally:
        done.set()
        thread.join()
    wall = time.perf_counter() - t0
    size = out.stat().st_size if out.exists() else 0
    analysed = None
    if fmt == "jsonl" and out.exists():
        analysed = sum(1 for line in out.read_text().splitlines() if '"type":"frame"' in line)
    elif out.exists():
        analysed = json.loads(out.read_text())["frames_analysed"]
    return {"format": fmt, "exit_code": code, "wall_s": wall, "samples": samples, "analysed": analysed,
            "output_mb": size / 2**20, "every": every}


def growth(samples: list[tuple[float, int, float]], skip: float = 0.25) -> float | None:
    """MB per 1000 analysed frames: least-squares slope of RSS over frames, after the first ``skip`` of the run."""
    pts = np.asarray(samples[int(len(samples) * skip):], dtype=np.float64)
    if len(pts) < 3 or np.ptp(pts[:, 1]) <= 0:
        return None
    return float(np.polyfit(pts[:, 1] / 1000.0, pts[:, 2], 1)[0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engine", required=True, help="the model (.onnx / .plan)")
    p.add_argument("--frames", type=int, default=3000, help="analysed frames per run")
    p.add_argument("--every", type=int, default=25, help="analyse every K-th frame of the 25 fps stream")
    p.add_argument("--size", default="1280x720", help="frame size of the made face video")
    p.add_argument("--video", help="loop this video's first 16 frames instead")
    p.add_argument("--rss-interval", type=float, default=1.0, help="seconds between RSS samples")
    p.add_argument("--compare-json", action="store_true", help="also run --format json (keeps every frame)")
    p.add_argument("--no-grids", action="store_true", help="leave the region grids out of the records")
    p.add_argument("--json", help="also write the runs (with every RSS sample) here")
    a = p.parse_args()
    w, h = (int(v) for v in a.size.lower().split("x"))
    frames = sample_frames((w, h), a.video)
    extra = ["--no-grids"] if a.no_grids else []
    runs = [run_live(a.engine, frames, a.frames, a.every, "jsonl", a.rss_interval, extra)]
    if a.compare_json:
        runs.append(run_live(a.engine, frames, a.frames, a.every, "json", a.rss_interval, extra))
    m = machine_info()
    print(f"\nCPU: {m['cpu_model']} ({m['cpus']} CPUs; flags {' '.join(m['cpu_flags'])}; load {m['load_avg_1m']:.1f})")
    print(f"source: looped {w}x{h} face video as a live stream, 25 fps, every {a.every}-th frame analysed (json: "
          f"every frame); engine {a.engine}\n")
    print("| format | exit | frames analysed | stream time | wall | RSS start | RSS end | RSS max | growth MB / 1000 "
          "frames | (2nd, 3rd, 4th quarter) | growth MB / stream hour | output |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        s = r["samples"]
        g = growth(s)
        q = len(s) // 4
        quarters = [growth(s[i * q:(i + 1) * q], skip=0.0) for i in (1, 2, 3)]
        per_hour = None if g is None else g * 25 * 3600 / r["every"] / 1000
        stream_min = (r["analysed"] or 0) * r["every"] / 25 / 60
        print(f"| {r['format']} | {r['exit_code']} | {r['analysed']} | {stream_min:.0f} min | {r['wall_s']:.0f} s | "
              f"{s[0][2]:.0f} MB | {s[-1][2]:.0f} MB | {max(x[2] for x in s):.0f} MB | "
              f"{'-' if g is None else f'{g:+.2f}'} | "
              f"{', '.join('-' if v is None else f'{v:+.2f}' for v in quarters)} | "
              f"{'-' if per_hour is None else f'{per_hour:+.1f}'} | "
              f"{r['output_mb']:.1f} MB |")


    if a.json:
        Path(a.json).write_text(json.dumps({"machine": m, "args": vars(a), "runs": runs}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
