"""The demo's own pieces: the forged sample video and the per-segment verdicts."""
import cv2
import numpy as np
import pytest


def read_frames(path):
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f[..., ::-1])
    cap.release()
    return frames


def test_forge_face_changes_only_the_face(astronaut):
    from aunet.demo import forge_face
    from aunet.faces import DlibHogDetector, LandmarkPredictor

    detector, predictor = DlibHogDetector(), LandmarkPredictor()
    forged = forge_face(astronaut, np.random.default_rng(0), detector, predictor)
    assert forged is not None and forged.shape == astronaut.shape
    changed = np.abs(forged.astype(int) - astronaut.astype(int)).max(axis=2) > 0
    x0, y0, x1, y1 = detector.detect(astronaut)[0].box
    pad = 0.3 * (x1 - x0)
    outside = np.ones_like(changed)
    outside[int(y0 - pad):int(y1 + pad), int(x0 - pad):int(x1 + pad)] = False
    assert changed.sum() > 500  # the face really was tampered
    assert not changed[outside].any()  # and nothing else
    assert forge_face(np.zeros((200, 200, 3), np.uint8), np.random.default_rng(0), detector, predictor) is None


def test_forged_video_segments_and_verdicts(tmp_path):
    from aunet.demo import make_forged_video, segment_verdicts

    path = tmp_path / "sample.mp4"
    plan = make_forged_video(path, [("real", 3), ("fake", 3)], size=(320, 240), seed=1)
    assert [(p["kind"], p["first_frame"], p["last_frame"]) for p in plan] == [("real", 0, 2), ("fake", 3, 5)]
    frames = read_frames(path)
    assert len(frames) == 6 and frames[0].shape == (240, 320, 3)
    result = {"frames": [{"index": i, "score": s} for i, s in enumerate([0.1, 0.2, None, 0.9, 0.4, 0.8])]}
    rows = segment_verdicts(result, plan, 0.5)
    assert rows[0]["score"] == pytest.approx(0.15) and rows[0]["verdict"] == "real" and rows[0]["frames_scored"] == 2
    assert rows[1]["score"] == pytest.approx(0.7) and rows[1]["verdict"] == "fake" and rows[1]["correct"]
    empty = segment_verdicts({"frames": []}, plan, 0.5)
    assert [r["verdict"] for r in empty] == ["no_face", "no_face"]
