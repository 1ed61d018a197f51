"""Decode only what is used: how `aunet-infer --frames N` / `--every K` skip frames on a long 720p video, timed and
checked frame by frame. A benchmark that prints a table, not a test.

Makes (once, into --dir) a synthetic 1280x720 25 fps video of --minutes whose every frame carries its own index
as a 16-bit block code, in two codecs: H.264 through PyAV (libx264 defaults: a key frame every 250 frames,
B-frames; skipped without PyAV) and MPEG-4 Part 2 through OpenCV (GOP 12). Then reads the sampled frames with
the runtime's own VideoSource under each seek policy: "never" (grab and drop every frame between), "always"
(CAP_PROP_POS_FRAMES before every sampled frame) and "auto" (what aunet-infer does: measured costs decide per
gap), and checks that every frame returned is the one asked for (its code read back from the pixels).

    python scripts/runtime_seek.py --minutes 5 --dir build/seek
"""
from __future__ import annotations

import argparse
import time
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from aunet.bench.measure import machine_info
from aunet.runtime.sources import Sampling, VideoSource

W, H, FPS = 1280, 720, 25


def coded_frame(base: np.ndarray, i: int) -> np.ndarray:
    img = np.roll(base, i * 4, axis=1)  # moving content, so frames differ as in a real video
    img[0:48, :1024] = 0
    for b in range(16):
        if (i >> b) & 1:
            img[0:48, b * 64:b * 64 + 48] = 255
    return img


def code_of(rgb: np.ndarray) -> int:
    blocks = rgb[8:40, :1024].reshape(32, 16, 64, 3)[:, :, 8:40].mean(axis=(0, 2, 3))
    return int(sum(1 << b for b in range(16) if blocks[b] > 128))


def make_video(path: Path, frames: int, codec: str) -> Path:
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    base = cv2.resize(rng.integers(0, 256, (90, 160, 3), dtype=np.uint8), (W, H), interpolation=cv2.INTER_CUBIC)
    tmp = path.with_name(".tmp." + path.name)
    if codec == "h264":
        import av

        out = av.open(str(tmp), "w")
        s = out.add_stream("libx264", rate=Fraction(FPS))
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.options = {"preset": "veryfast", "crf": "28"}
        for i in range(frames):
            for pkt in s.encode(av.VideoFrame.from_ndarray(coded_frame(base, i), format="bgr24")):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)
        out.close()
    else:
        w = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (W, H))
        for i in range(frames):
            w.write(coded_frame(base, i))
        w.release()
    tmp.rename(path)
    return path


def read(path: Path, sampling: Sampling, policy: str) -> dict:
    src = VideoSource(path, sampling, seek=policy)
    t0 = time.perf_counter()
    got = [(i, code_of(rgb)) for i, _, rgb in src.frames()]
    wall = time.perf_counter() - t0
    return {"s": wall, "n": len(got), "wrong": sum(i != c for i, c in got), "seeks": src.seeker.seeks,
            "grabs": src.seeker.grabs}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=5.0, help="length of the synthetic video")
    p.add_argument("--dir", default="build/seek", help="where the videos are made (kept for reruns)")
    p.add_argument("--frames", type=int, action="append", help="--frames N cases (default 32, 300)")
    p.add_argument("--every", type=int, action="append", help="--every K cases (default 25, 250)")
    a = p.parse_args()
    n = int(a.minutes * 60 * FPS)
    videos = []
    try:
        import av  # noqa: F401

        videos.append(("H.264 (x264, GOP 250)", make_video(Path(a.dir) / f"h264_{n}.mp4", n, "h264")))
    except ImportError:
        print("PyAV not installed: H.264 case skipped")
    videos.append(("MPEG-4 Part 2 (GOP 12)", make_video(Path(a.dir) / f"mp4v_{n}.mp4", n, "mp4v")))
    cases = [Sampling(frames=f) for f in (a.frames or [32, 300])] + [Sampling(every=k) for k in (a.every or [25, 250])]
    m = machine_info()
    print(f"\nCPU: {m['cpu_model']} ({m['cpus']} CPUs; flags {' '.join(m['cpu_flags'])}; load {m['load_avg_1m']:.1f}); "
          f"OpenCV {cv2.__version__}; {W}x{H}, {FPS} fps, {n} frames ({a.minutes:g} min)\n")
    print("| video | sampling | frames | grab every frame (never seek) | seek every sampled frame | auto (aunet-infer) "
          "| auto: seeks / grabs | wrong frames (never, always, auto) |")
    print("|---|---|---|---|---|---|---|---|")
    for label, path in videos:
        for sampling in cases:
            r = {pol: read(path, sampling, pol) for pol in ("never", "always", "auto")}
            print(f"| {label} | {sampling.describe()} | {r['auto']['n']} | {r['never']['s']:.2f} s | "
                  f"{r['always']['s']:.2f} s | {r['auto']['s']:.2f} s | {r['auto']['seeks']} / {r['auto']['grabs']} | "
                  f"{r['never']['wrong']}, {r['always']['wrong']}, {r['auto']['wrong']} |", flush=True)


if __name__ == "__main__":
    main()
