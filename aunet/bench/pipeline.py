"""`aunet-bench pipeline`: `aunet-infer`'s whole pipeline on one video (decode, face detection, crops, model),
end-to-end frames/s, stage times, and the peak and growth of resident memory while it runs; then each face
detector alone (dlib HOG, BlazeFace, YuNet when its file is given), ms/frame at 640x480 and 1280x720 on one and
two threads, beside the CPU's flags."""
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


def time_video(detector, engine: Path, video: Path, every: Optional[int], rss_interval: float, load_s: float,
               face_detectors: bool = True, yunet: Optional[Path] = None) -> dict:
    """Run the pipeline over ``video`` while sampling memory; the results document (closes ``detector``).
    With ``face_detectors``, the face detectors are then timed alone too (``face_detector_rows``; YuNet when its
    file is given). Raises the runtime's InputError (unreadable video) and InferenceError (the backend failed)."""
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
        **({"face_detectors": face_detector_rows(yunet)} if face_detectors else {}),
    }


def pipeline_table(doc: dict, video: Path):
    """The pipeline's table, and the face detectors' below it when the document has them."""
    table = _pipeline_only_table(doc, video)
    if not doc.get("face_detectors"):
        return table
    from rich.console import Group

    return Group(table, face_detector_table(doc["face_detectors"], doc["machine"]))


def _pipeline_only_table(doc: dict, video: Path) -> Table:
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


# --- face detectors alone ---------------------------------------------------------------------------------

DETECTOR_SIZES = ((640, 480), (1280, 720))


def detector_frame(size: tuple[int, int]) -> np.ndarray:
    """A frame of ``size`` (width, height) as the sample video makes them: the astronaut's face at ~30 % of the
    frame height, mid-frame (so every detector has one face to find)."""
    import cv2

    from aunet.demo.sample_data import ASTRONAUT_FACE, astronaut

    w, h = size
    x0, y0, x1, y1 = ASTRONAUT_FACE
    s = 0.3 * h / (y1 - y0)
    m = np.array([[s, 0, w / 2 - s * (x0 + x1) / 2], [0, s, h / 2 - s * (y0 + y1) / 2]], np.float64)
    return cv2.warpAffine(astronaut(), m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def face_detector_rows(yunet: Optional[Path] = None, threads: tuple[int, ...] = (1, 2),
                       sizes: tuple[tuple[int, int], ...] = DETECTOR_SIZES, repeats: int = 10) -> list[dict]:
    """ms/frame of each face detector this install has (dlib HOG, BlazeFace, YuNet when its file is given) on
    one frame of each size, with ONNX Runtime / OpenCV limited to each thread count (dlib is single-threaded).
    A detector that cannot be built here is a row with its reason."""
    import cv2

    from aunet.bench.measure import latency_stats, time_calls
    from aunet.faces import DlibHogDetector
    from aunet.faces.blazeface import BlazeFaceOnnx
    from aunet.faces.yunet import YuNetOnnx

    makers = [("dlib HOG", lambda n: DlibHogDetector(), threads[:1]),  # dlib runs on one thread whatever we say
              ("BlazeFace", lambda n: BlazeFaceOnnx(None, "cpu", n), threads)]
    if yunet is not None:
        makers.append(("YuNet", lambda n: YuNetOnnx(yunet, "cpu", n), threads))
    frames = {size: detector_frame(size) for size in sizes}
    rows, cv_threads = [], cv2.getNumThreads()
    try:
        for label, make, counts in makers:
            for n in counts:
                cv2.setNumThreads(n)  # the resize inside each detector
                try:
                    detector = make(n)
                except Exception as exc:  # a missing package or file: say so in the table
                    rows.append({"detector": label, "threads": n, "error": " ".join(str(exc).split())[:120]})
                    break
                for size, frame in frames.items():
                    faces = detector.detect(frame)
                    ms = latency_stats(time_calls(detector.detect, frame, repeats, warmup=2))
                    rows.append({"detector": label, "name": detector.name, "threads": n, "size": f"{size[0]}x{size[1]}",
                                 "ms_p50": ms["p50"], "ms_mean": ms["mean"], "faces": len(faces),
                                 "top_score": max((f.score for f in faces), default=None)})
    finally:
        cv2.setNumThreads(cv_threads)
    return rows


def face_detector_table(rows: list[dict], machine: dict) -> Table:
    flags = ", ".join(machine.get("cpu_flags", [])) or "none reported"
    table = Table(title=f"face detectors alone, ms/frame (one face at ~30 % of the frame height); "
                        f"{machine.get('cpu_model', '')}, {machine.get('cpus')} CPUs, flags: {flags}")
    for col in ("detector", "threads", "size", "ms/frame p50", "mean", "faces", "top score"):
        table.add_column(col, justify="left" if col == "detector" else "right")
    for r in rows:
        if "error" in r:
            table.add_row(r["detector"], str(r["threads"]), "-", "-", "-", "-", r["error"])
            continue
        score = "-" if r["top_score"] is None else f"{r['top_score']:.2f}"
        table.add_row(r["detector"], str(r["threads"]), r["size"], f"{r['ms_p50']:.1f}", f"{r['ms_mean']:.1f}",
                      str(r["faces"]), score)
    return table
