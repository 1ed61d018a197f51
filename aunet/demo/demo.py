"""`make demo`: the whole toolchain end to end, offline, on a 2-core CPU, through the real CLIs.

sample faces (scikit-image's astronaut) -> aunet-prep -> TAP preview -> aunet-train (small config) ->
aunet-export onnx (verified) -> aunet-eval of the ONNX model on a labeled set of held-out real and forged photos
(ROC curve) -> aunet-calib quantize for the CPU and for TensorRT (INT8 Q/DQ ONNX to the accuracy target, judged
on held-out faces; a missed target fails the demo, which still runs the rest) -> a sample video with real segments and segments whose face is a
self-blended forgery -> aunet-infer --save-video -> per-segment verdicts, an annotated-frame picture and a
timing summary. Where TensorRT and a GPU are present, the same model is also built and run as a TensorRT engine.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from aunet.cli import EXIT_BAD_INPUT, EXIT_CHECK_FAILED, fail, run
from aunet.io import atomic_path

PROG = "python -m aunet.demo"
EXIT_CODES_HELP = ("Exit codes: 0 every stage ran; 1 a stage failed (its command and output are shown; an INT8 model "
                   "that misses its accuracy target is a failed stage); 2 bad arguments.")
console = Console(width=150)
app = typer.Typer(add_completion=False, help=__doc__, pretty_exceptions_enable=False)
TRAIN_STEPS = 360


@dataclass
class Stage:
    name: str
    seconds: float
    status: str
    outputs: list[str] = field(default_factory=list)


class StageFailed(RuntimeError):
    pass


def tool(name: str) -> str:
    """A console script of this install (beside the running interpreter first)."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        raise StageFailed(f"{name} is not installed (pip install -e '.[train,export,dev]')")
    return found


class Runner:
    def __init__(self) -> None:
        self.stages: list[Stage] = []
        self.failed: list[str] = []  # stages that failed without stopping the demo (defer_failure)

    def run(self, name: str, argv: list[str], outputs: tuple[Path, ...] = (), ok_codes: tuple[int, ...] = (0,),
            show: bool = True, stream: bool = False, defer_failure: bool = False) -> subprocess.CompletedProcess:
        """Run one CLI; ``stream`` lets its progress bar through (long stages), else its stdout is shown after.
        ``defer_failure``: a non-zero exit (within ``ok_codes``) is a failed stage that does not stop the demo;
        the demo exits 1 at the end."""
        console.rule(f"[bold]{name}")
        console.print("$ " + " ".join(str(a) for a in argv), style="dim", highlight=False)
        t0 = time.perf_counter()
        try:
            proc = subprocess.run([str(a) for a in argv], capture_output=not stream, text=True)
        except OSError as exc:  # not executable, vanished
            self.stages.append(Stage(name, time.perf_counter() - t0, "failed (cannot start)"))
            raise StageFailed(f"{name} cannot start: {exc}") from None
        dt = time.perf_counter() - t0
        if show and not stream and proc.stdout.strip():
            console.print(proc.stdout.rstrip(), highlight=False, markup=False)
        if proc.returncode not in ok_codes:
            if not stream:
                console.print(proc.stderr.rstrip()[-4000:], highlight=False, markup=False)
            self.stages.append(Stage(name, dt, f"failed (exit {proc.returncode})"))
            raise StageFailed(f"{name} failed with exit code {proc.returncode}")
        if defer_failure and proc.returncode != 0:
            if not stream:
                console.print(proc.stderr.rstrip()[-4000:], highlight=False, markup=False)
            self.stages.append(Stage(name, dt, f"failed (exit {proc.returncode})", [str(p) for p in outputs]))
            self.failed.append(f"{name} failed with exit code {proc.returncode}")
            return proc
        self.stages.append(Stage(name, dt, "ok" if proc.returncode == 0 else f"exit {proc.returncode}",
                                 [str(p) for p in outputs]))
        return proc

    def step(self, name: str, fn, outputs: tuple[Path, ...] = ()):
        """Run one in-process stage; whatever it raises stops the demo as a failed stage (exit 1)."""
        console.rule(f"[bold]{name}")
        t0 = time.perf_counter()
        try:
            result = fn()
        except Exception as exc:
            self.stages.append(Stage(name, time.perf_counter() - t0, "failed"))
            why = str(exc) if isinstance(exc, StageFailed) else f"{type(exc).__name__}: {exc}"
            raise StageFailed(f"{name} failed: {why}") from exc
        self.stages.append(Stage(name, time.perf_counter() - t0, "ok", [str(p) for p in outputs]))
        return result


def forge_face(frame: np.ndarray, rng: np.random.Generator, detector, predictor, size: int = 224) -> Optional[np.ndarray]:
    """The frame with its face replaced by a TAP self-blended forgery (Eq. 9), pasted back through the crop's
    inverse affine and blended by the warped M_p, so only the tampered region of the face changes."""
    import cv2

    from aunet.faces.crop import crop_face, invert_affine, to_crop_coords
    from aunet.tap.sbi import make_tap_fake
    from aunet.spec import CropSpec

    faces = detector.detect(frame)
    if not faces:
        return None
    box = faces[0].box
    landmarks = predictor.predict(frame, box)
    crop, affine = crop_face(frame, box, size, CropSpec())
    fake, m_p = make_tap_fake(crop, to_crop_coords(landmarks, affine), rng)
    h, w = frame.shape[:2]
    back = invert_affine(affine)
    fake_full = cv2.warpAffine(fake, back, (w, h), flags=cv2.INTER_LINEAR)
    mask = cv2.warpAffine(m_p.astype(np.float32), back, (w, h), flags=cv2.INTER_LINEAR)[..., None]
    return np.clip(fake_full * mask + frame * (1 - mask), 0, 255).astype(np.uint8)


def make_forged_video(path: Path, segments: list[tuple[str, int]], fps: float = 10.0, size: tuple[int, int] = (512, 384),
                      seed: int = 0) -> list[dict]:
    """A video of the sample face whose segments are "real" or "fake" (the face forged in every frame).
    Returns the segments with their frame ranges."""
    import cv2

    from aunet.faces import DlibHogDetector, LandmarkPredictor
    from aunet.demo.sample_data import sample_frame

    rng = np.random.default_rng(seed)
    detector, predictor = DlibHogDetector(), LandmarkPredictor()
    w, h = size
    plan, start = [], 0
    with atomic_path(path) as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        if not writer.isOpened():
            raise StageFailed("OpenCV cannot write mp4 videos here")
        try:
            for kind, count in segments:
                # a window of the photo at its own scale (a resize would stretch and blur every face; sizes up to
                # the photo's 512 px need none), and a camera drifting by whole pixels for the same reason
                base = sample_frame(rng, out_size=(w, h))
                if base.shape[:2] != (h, w):
                    base = cv2.resize(base, (w, h), interpolation=cv2.INTER_LINEAR)
                for t in range(count):
                    shift = np.float32([[1, 0, round(6 * np.sin(0.4 * t))], [0, 1, round(4 * np.cos(0.3 * t))]])
                    frame = cv2.warpAffine(base, shift, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT_101)
                    if kind == "fake":
                        forged = forge_face(frame, rng, detector, predictor)
                        frame = forged if forged is not None else frame
                    writer.write(np.ascontiguousarray(frame[..., ::-1]))
                plan.append({"kind": kind, "first_frame": start, "last_frame": start + count - 1})
                start += count
        finally:
            writer.release()
    return plan


def make_labeled_set(root: Path, pairs: int, seed: int) -> Path:
    """``pairs`` real photos of the sample face and as many with the face forged (forge_face), never trained on,
    listed in root/labels.csv (path,label; 1 = fake) for aunet-eval."""
    from aunet.faces import DlibHogDetector, LandmarkPredictor
    from aunet.io import atomic_write_text
    from aunet.demo.sample_data import sample_frame, write_image

    rng = np.random.default_rng([seed, 0x7E57])
    detector, predictor = DlibHogDetector(), LandmarkPredictor()
    rows = ["path,label"]
    for i in range(pairs):
        real = sample_frame(rng)
        rows.append(f"{write_image(root / 'real' / f'real_{i:02d}.png', real).relative_to(root)},0")
        forged = forge_face(sample_frame(rng), rng, detector, predictor)
        if forged is not None:
            rows.append(f"{write_image(root / 'fake' / f'fake_{i:02d}.png', forged).relative_to(root)},1")
    atomic_write_text(root / "labels.csv", "\n".join(rows) + "\n")
    return root / "labels.csv"


def save_frames_picture(video: Path, plan: list[dict], result: dict, out: Path) -> Path:
    """One annotated frame of the real segments and one of the forged ones, side by side: of the frames whose
    face was scored, the one with the segment kind's median score (a typical frame, not the best one)."""
    import cv2

    from aunet.demo.sample_data import write_image

    scored = {f["index"]: f["score"] for f in result.get("frames", []) if f.get("score") is not None}
    picks = []
    for kind in ("real", "fake"):
        segs = [s for s in plan if s["kind"] == kind]
        cands = sorted((scored[i], i) for s in segs for i in range(s["first_frame"], s["last_frame"] + 1) if i in scored)
        if cands:
            picks.append(cands[len(cands) // 2][1])
        elif segs:
            picks.append((segs[0]["first_frame"] + segs[0]["last_frame"]) // 2)
    cap = cv2.VideoCapture(str(video))
    frames = []
    for index in picks:
        cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = cap.read()
        if ok:
            frames.append(frame[..., ::-1])
    cap.release()
    if not frames:
        raise StageFailed(f"cannot read frames back from {video}")
    return write_image(out, np.concatenate(frames, axis=1))


def segment_verdicts(result: dict, plan: list[dict], threshold: float) -> list[dict]:
    """Mean frame score (max over faces) of each segment of the sample video, and its verdict."""
    rows = []
    for seg in plan:
        scores = [f["score"] for f in result["frames"]
                  if seg["first_frame"] <= f["index"] <= seg["last_frame"] and f.get("score") is not None]
        score = float(np.mean(scores)) if scores else None
        verdict = "no_face" if score is None else ("fake" if score >= threshold else "real")
        rows.append({**seg, "frames_scored": len(scores), "score": score, "verdict": verdict,
                     "correct": verdict == seg["kind"]})
    return rows


def _video_result(path: Path) -> dict:
    """aunet-infer's JSON for the one video it was given."""
    result = json.loads(path.read_text())
    return result[0] if isinstance(result, list) else result


def tensorrt_available() -> bool:
    try:
        import tensorrt  # noqa: F401

        from aunet.backends import cuda_devices

        return bool(cuda_devices())
    except Exception:  # not installed, or no driver
        return False


def print_verdicts(video: Path, plan: list[dict], result: dict) -> None:
    """The verdict of each segment of the sample video beside its truth, and the whole video's."""
    rows = segment_verdicts(result, plan, float(result["threshold"]))
    table = Table(title=f"{video.name}: verdict per segment (threshold {result['threshold']})", show_edge=False)
    for col in ("frames", "truth", "mean score", "verdict", ""):
        table.add_column(col)
    for row in rows:
        score = "-" if row["score"] is None else f"{row['score']:.3f}"
        table.add_row(f"{row['first_frame']}-{row['last_frame']}", row["kind"], score, row["verdict"],
                      "[green]correct[/]" if row["correct"] else "[red]wrong[/]")
    console.print(table)
    console.print(f"whole video: {result['verdict']} (score {result['score']})")


@app.command(epilog=EXIT_CODES_HELP)
def demo(
    out: Path = typer.Option(Path("demo"), help="Folder for everything the demo makes."),
    train_steps: int = typer.Option(TRAIN_STEPS, min=1, help="Training steps of the small config (about 1.4 s each on 2 cores; the cosine schedule ends there)."),
    images: int = typer.Option(96, min=4, help="Sample face images to make."),
    eval_pairs: int = typer.Option(24, min=1, help="Held-out real / forged photo pairs for aunet-eval."),
    seed: int = typer.Option(0, help="Seed of the sample data and of training."),
) -> None:
    """Run the whole toolchain on embedded sample data."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise fail(PROG, f"cannot make the output folder {out}: {exc}", EXIT_BAD_INPUT) from None
    raw, faces, run, model = out / "raw", out / "faces", out / "run", out / "model.onnx"
    r = Runner()
    t_start = time.perf_counter()
    try:
        from aunet.demo.sample_data import make_sample_images, make_sample_video

        def sample() -> None:
            rng = np.random.default_rng(seed)
            make_sample_images(raw / "images", images, rng)
            for i in range(2):
                make_sample_video(raw / "videos" / f"clip_{i}.mp4", frames=24, rng=rng)

        r.step("sample faces (scikit-image's astronaut, varied)", sample, (raw,))
        r.run("aunet-prep", [tool("aunet-prep"), raw, "--out", faces, "--size", "112", "--frames", "8"], (faces,))
        preview = out / "tap_preview.png"
        r.run("TAP preview", [tool("aunet-prep"), "preview", faces, "--out", preview, "--rows", "4"], (preview,))
        r.run("aunet-train (small config, cross-dataset protocol: reals + TAP fakes)",
              [tool("aunet-train"), "--data", faces, "--out", run, "--config", "small", "--max-steps", train_steps,
               "--seed", seed, "--device", "cpu"], (run / "best.pt",),
              stream=True)
        ckpt = run / "best.pt" if (run / "best.pt").is_file() else run / "last.pt"
        r.run("aunet-export onnx (+ verification against PyTorch)",
              [tool("aunet-export"), "onnx", "--ckpt", ckpt, "--out", model, "--data", faces], (model,))
        labeled = r.step("labeled test set: held-out real and forged photos",
                         lambda: make_labeled_set(out / "testset", eval_pairs, seed), (out / "testset" / "labels.csv",))
        r.run("aunet-eval (the ONNX model through the runtime: AUC, AP, EER, ROC curve)",
              [tool("aunet-eval"), "--ckpt", model, "--data", labeled, "--out", out / "eval", "--name", "demo photos",
               "--device", "cpu"], (out / "eval" / "metrics.md", out / "eval" / "roc.png"))
        int8_rows = int8_stages(r, model, faces, out)
        video = out / "sample.mp4"
        plan = r.step("sample video: real / forged / real / forged segments",
                      lambda: make_forged_video(video, [("real", 20), ("fake", 20), ("real", 20), ("fake", 20)],
                                                seed=seed), (video,))
        result_path, annotated = out / "result.json", out / "annotated.mp4"
        r.run("aunet-infer (ONNX Runtime, the face detector the model was trained with, every frame)",
              [tool("aunet-infer"), video, "--engine", model, "--out", result_path, "--save-video", annotated],
              (result_path, annotated), ok_codes=(0, 1), show=False)
        picture = out / "annotated_frames.png"
        r.step("annotated frames: a real and a forged segment",
               lambda: save_frames_picture(annotated, plan, _video_result(result_path), picture), (picture,))
        if tensorrt_available():
            r.run("aunet-export trt --fp16", [tool("aunet-export"), "trt", "--onnx", model, "--fp16"], (out / "model.fp16.plan",))
            if any(row["target"] == "tensorrt" and row["passed"] for row in int8_rows):
                plan8 = out / "model.int8.plan"
                r.run("aunet-export trt --int8 (the judged TensorRT Q/DQ ONNX)",
                      [tool("aunet-export"), "trt", "--onnx", out / "model.int8.onnx", "--int8"], (plan8,))
                r.run("aunet-calib report (FP32 vs the INT8 engine, held-out faces)",
                      [tool("aunet-calib"), "report", "--fp32", model, "--int8", plan8, "--data", faces, "--device", "cuda",
                       "--out", out / "int8_engine_report.json"], (out / "int8_engine_report.json",), ok_codes=(0, 1),
                      defer_failure=True)
            r.run("aunet-infer (TensorRT FP16 engine)", [tool("aunet-infer"), video, "--engine", out / "model.fp16.plan",
                                                         "--out", out / "result.trt.json"], ok_codes=(0, 1), show=False)
        else:
            console.print("[dim]TensorRT or a GPU is not available here: the engine stages are skipped[/]")
        r.step("verdict per segment", lambda: print_verdicts(video, plan, _video_result(result_path)))
    except StageFailed as exc:
        summary(r, time.perf_counter() - t_start)
        raise fail(PROG, f"stopped: {exc}", EXIT_CHECK_FAILED) from None
    summary(r, time.perf_counter() - t_start, int8_rows)
    if r.failed:
        raise fail(PROG, f"{len(r.failed)} stage(s) failed: " + "; ".join(r.failed), EXIT_CHECK_FAILED)


def summary(r: Runner, total: float, int8_rows: Sequence[dict] = ()) -> None:
    table = Table(title=f"demo summary ({total / 60:.1f} min)", show_edge=False)
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    table.add_column("status")
    table.add_column("outputs")
    for s in r.stages:
        table.add_row(s.name, f"{s.seconds:.1f}", s.status, " ".join(s.outputs))
    console.print(table)
    if int8_rows:
        console.print(int8_table(int8_rows))


# --- INT8: quantized to the accuracy target, judged on held-out faces, for the CPU and for TensorRT --------------

INT8_TARGETS = (("cpu", "model.int8-cpu.onnx"), ("tensorrt", "model.int8.onnx"))


def int8_stages(r: "Runner", model: Path, faces: Path, out: Path) -> list[dict]:
    """`aunet-calib quantize` for each target, to the default accuracy target on held-out faces of the demo's
    cache. A target that is missed is a failed stage: the demo goes on and exits 1 at the end. Returns each
    target's report (its JSON beside the model) for the summary."""
    rows = []
    for target, name in INT8_TARGETS:
        int8 = out / name
        report = out / f"{name}.report.json"
        label = f"aunet-calib quantize --target {target} (INT8 to the accuracy target, judged on held-out faces)"
        proc = r.run(label, [tool("aunet-calib"), "quantize", "--model", model, "--data", faces, "--target", target,
                             "--out", int8, "--report", report], (int8, report), ok_codes=(0, 1), defer_failure=True)
        rows.append(int8_row(target, report, proc.returncode))
    return rows


def int8_row(target: str, report: Path, returncode: int) -> dict:
    """One line of the summary's INT8 table from a quantize report (or what is known without one)."""
    row: dict = {"target": target, "passed": returncode == 0}
    try:
        data = json.loads(report.read_text())
    except (OSError, ValueError):
        return row
    judgement, speed = data.get("judgement", {}), data.get("speed") or {}
    interval = judgement.get("interval", {})
    row.update(method=data.get("method"), fp32_nodes=len(data.get("fp32_nodes", [])),
               quantizable=data.get("quantizable_nodes"), accuracy=data.get("accuracy"),
               faces=judgement.get("num_faces"), agreement=judgement.get("decision_agreement"),
               agreement_ci=interval.get("decision_agreement"), auc_fp32=judgement.get("auc_reference"),
               auc_int8=judgement.get("auc_candidate"), auc_drop=judgement.get("auc_drop_points"),
               auc_drop_ci=interval.get("auc_drop_points"), fp32_fps=speed.get("fp32_faces_per_s"),
               int8_fps=speed.get("int8_faces_per_s"), speedup=speed.get("speedup"),
               cpu_flags=(speed.get("cpu") or {}).get("flags"))
    return row


def int8_table(rows: Sequence[dict]) -> Table:
    """FP32 vs INT8, side by side: held-out accuracy (with 95 % intervals) and ONNX Runtime CPU speed."""
    flags = next((" ".join(r["cpu_flags"]) for r in rows if r.get("cpu_flags")), "")
    target = next((r["accuracy"] for r in rows if r.get("accuracy")), "")
    table = Table(title=f"FP32 vs INT8 on held-out faces (target {target}); speed: ONNX Runtime CPU"
                        + (f", CPU flags {flags}" if flags else ""), show_edge=False)
    for col in ("INT8 for", "method", "FP32 nodes", "agreement [95 %]", "AUC FP32→INT8", "AUC drop [95 %]",
                "FP32 faces/s", "INT8 faces/s", "INT8/FP32", "target"):
        table.add_column(col, justify="left" if col in ("INT8 for", "method", "target") else "right", no_wrap=True)

    def ci(v, scale=1.0, fmt="{:.1f}"):
        return f"[{fmt.format(scale * v[0])}, {fmt.format(scale * v[1])}]" if v else ""

    def pm(v, fmt="{:.1f}"):
        return f"{fmt.format(v[0])} ± {fmt.format(v[1])}" if v else "-"

    for row in rows:
        if row.get("agreement") is None:
            table.add_row(row["target"], *["-"] * 8, "[red]no report[/]")
            continue
        has_auc = row.get("auc_drop") is not None
        table.add_row(
            row["target"] + ("*" if row["target"] == "tensorrt" else ""), str(row.get("method")),
            f"{row.get('fp32_nodes')} of {row.get('quantizable')}",
            f"{100 * row['agreement']:.1f} % " + ci(row.get("agreement_ci"), 100.0),
            f"{row['auc_fp32']:.3f}→{row['auc_int8']:.3f}" if has_auc else "n/a",
            (f"{row['auc_drop']:.2f} " + ci(row.get("auc_drop_ci"), fmt="{:.2f}")) if has_auc else "n/a",
            pm(row.get("fp32_fps")), pm(row.get("int8_fps")),
            (pm(row.get("speedup"), "{:.2f}") + "×") if row.get("speedup") else "-",
            "met" if row["passed"] else "[red]missed[/]")
    if any(row["target"] == "tensorrt" for row in rows):
        table.caption = ("* the TensorRT Q/DQ ONNX runs on ONNX Runtime's CPU provider as DequantizeLinear + FP32 "
                         "kernels (TensorRT fuses them): its accuracy is judged here, its speed is the engine's")
    return table


def main(argv: Sequence[str] | None = None) -> None:
    run(app, PROG, argv)


if __name__ == "__main__":
    main()
