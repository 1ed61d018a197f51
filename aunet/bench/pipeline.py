"""`aunet-bench pipeline`: `aunet-infer`'s whole pipeline on one video (decode, face detection, crops, model),
end-to-end frames/s, stage times, and the peak and growth of resident memory while it runs."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Optional

import numpy as np
from rich.table import Table

from aunet.bench.measure import current_rss_mb, machine_info, peak_rss_mb


class RssSampler:
    """Samples resident memory every ``interval`` s beside the video position reached (for the growth slope)."""

    def __init__(self, interval: float):
        self.interval, self.samples, self.position_s = interval, [], 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        t0 = time.perf_counter()
        while not self._stop.wait(self.interval):
            self.samples.append((time.perf_counter() - t0, self.position_s, current_rss_mb()))

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def growth_mb_per_min(self, skip: float = 0.25) -> Optional[float]:
        """Least-squares slope of RSS over video minutes, after the first ``skip`` of the run (warm-up)."""
        pts = np.asarray(self.samples[int(len(self.samples) * skip):], dtype=np.float64)
        if len(pts) < 3 or np.ptp(pts[:, 1]) <= 0:
            return None
        return float(np.polyfit(pts[:, 1] / 60.0, pts[:, 2], 1)[0])


def parse_size(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` -> (width, height); ValueError unless both are whole numbers of at least 64."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    if w < 64 or h < 64:
        raise ValueError(f"the video must be at least 64x64, got {text!r}")
    return w, h


def open_detector(engine: Path, device: str, batch: int, detect_max_side: Optional[int]):
    """The runtime's Detector with its model and face detector loaded (so loading is not timed as video);
    returns it and the seconds it took. Raises what opening them raises."""
    from aunet.runtime.pipeline import Detector

    t0 = time.perf_counter()
    detector = Detector(engine, device=device, batch_size=batch, detect_max_side=detect_max_side)
    try:
        detector.face_detector  # noqa: B018 - load it before timing
    except BaseException:
        detector.close()
        raise
    return detector, time.perf_counter() - t0


def time_video(detector, engine: Path, video: Path, every: Optional[int], rss_interval: float, load_s: float) -> dict:
    """Run the pipeline over ``video`` while sampling memory; the results document (closes ``detector``).
    Raises the runtime's InputError (unreadable video) and InferenceError (the backend failed)."""
    from aunet.runtime.sources import Sampling, VideoSource

    rss_start = current_rss_mb()
    with detector, RssSampler(rss_interval) as sampler:

        def on_frame(frame, _rgb) -> None:
            sampler.position_s = frame.time_s

        src = VideoSource(video, Sampling(every=every))
        result = detector.predict_video(src, on_frame=on_frame)
    t = result.timings
    duration_s = (src.frame_count or 0) / src.fps if src.fps else None
    growth = sampler.growth_mb_per_min()
    peak_sampled = max((r for _, _, r in sampler.samples), default=current_rss_mb())
    return {
        "engine": str(engine), "backend": detector.backend.name, "face_detector": result.info["face_detector"],
        "video": result.info["video"], "video_duration_s": duration_s, "sampling": result.info["sampling"],
        "batch_size": detector.batch_size, "frames_analysed": len(result.frames),
        "frames_with_face": result.frames_with_face,
        "load_s": load_s, "timings": t, "frames_per_s": t["frames_per_s"],
        "faces_per_s": sum(len(f.faces) for f in result.frames) / t["total_s"],
        "rss_start_mb": rss_start, "rss_peak_sampled_mb": peak_sampled, "peak_rss_mb": peak_rss_mb(),
        "rss_growth_mb_per_video_min": growth,
        "rss_projected_10min_mb": None if growth is None else peak_sampled + max(0.0, growth) * max(
            0.0, 10.0 - (duration_s or 0.0) / 60.0),
        "rss_samples": [[round(a, 2), round(b, 2), round(c, 1)] for a, b, c in sampler.samples],
        "machine": machine_info(),
    }


def pipeline_table(doc: dict, video: Path) -> Table:
    t, growth = doc["timings"], doc["rss_growth_mb_per_video_min"]
    table = Table(title=f"aunet-infer pipeline: {video.name} ({doc['video']['width']}x{doc['video']['height']}, "
                        f"{doc['sampling']}), {doc['backend']}, {doc['face_detector']}")
    for col in ("frames", "frames/s", "faces/s", "decode s", "detect s", "infer s", "total s", "peak RSS MB",
                "RSS growth MB/min"):
        table.add_column(col, justify="right")
    table.add_row(str(doc["frames_analysed"]), f"{t['frames_per_s']:.2f}", f"{doc['faces_per_s']:.2f}",
                  f"{t['decode_s']:.1f}", f"{t['detect_s']:.1f}", f"{t['infer_s']:.1f}", f"{t['total_s']:.1f}",
                  f"{doc['peak_rss_mb']:.0f}", "-" if growth is None else f"{growth:+.1f}")
    return table
