"""The reference bundle ``model.ref.npz``: sample inputs and the PyTorch outputs of every head.

It travels beside the model so that any backend, anywhere (an edge box without torch), can be checked against
the PyTorch reference: ``aunet-export verify --model model.plan --ref model.ref.npz``.

Keys: ``image`` float32 [N, 3, S, S] RGB in [0, 1]; ``cls_logits`` [N, 2], ``patch_logits`` [N, n, 2],
``score`` [N] (float32, from the eval model); ``label`` int64 [N] (0 real, 1 fake, -1 unknown); ``source``
(str: "synthetic" or the data folder); ``spec`` (str: the model spec JSON).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aunet.faces.cache import is_face_cache
from aunet.io import atomic_path
from aunet.spec import OUTPUT_NAMES, ModelSpec, SpecError

if TYPE_CHECKING:  # pragma: no cover
    import torch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
LABEL_DIRS = {"real": 0, "fake": 1}


class ReferenceError(ValueError):
    """A reference bundle that is missing, malformed or made for another model."""


def synthetic_faces(n: int, size: int, seed: int = 0) -> np.ndarray:
    """[n, 3, size, size] float32 in [0, 1]: smooth random fields plus fine noise.

    Not faces, but image-like (low-frequency structure, full value range), which exercises the graph far better
    than i.i.d. noise; a real-crop bundle comes from ``--data``.
    """
    import cv2

    rng = np.random.default_rng(seed)
    out = np.empty((n, 3, size, size), np.float32)
    for i in range(n):
        coarse = rng.random((int(rng.integers(3, 9)),) * 2 + (3,), dtype=np.float32)
        smooth = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
        img = smooth + rng.normal(0.0, 0.03, smooth.shape).astype(np.float32)
        out[i] = np.clip(img, 0.0, 1.0).transpose(2, 0, 1)
    return out


def _fit(rgb: np.ndarray, size: int) -> np.ndarray:
    """HWC uint8 RGB -> CHW float32 [0, 1] at ``size`` (INTER_AREA when shrinking, INTER_LINEAR when enlarging)."""
    import cv2

    if rgb.shape[:2] != (size, size):
        interp = cv2.INTER_AREA if min(rgb.shape[:2]) > size else cv2.INTER_LINEAR
        rgb = cv2.resize(rgb, (size, size), interpolation=interp)
    return rgb.transpose(2, 0, 1).astype(np.float32) / 255.0


def _crops_from_cache(root: Path, spec: ModelSpec, n: int, rng: np.random.Generator) -> tuple[list, list]:
    """Faces from an aunet-prep face cache, spread over as many videos as possible (first face of every video
    before any second one) and alternating between labels."""
    from aunet.faces.cache import CacheError, FaceCache

    try:
        cache = FaceCache(root, crop=spec.crop)  # the deployed crop: the reference must see what the runtime sees
        picks: dict[int, list] = {}
        videos = cache.videos()
        for row in range(max((v.num_faces for v in videos), default=0)):
            for i in rng.permutation(len(videos)):
                if row < videos[i].num_faces:
                    picks.setdefault(videos[i].label, []).append((videos[i].video_id, row))
        queues = [picks[label] for label in sorted(picks)]
        loaded: dict[str, np.ndarray] = {}
        images, labels = [], []
        while len(images) < n and any(queues):
            for label, queue in zip(sorted(picks), queues):
                if queue and len(images) < n:
                    video_id, row = queue.pop(0)
                    if video_id not in loaded:
                        loaded[video_id] = cache.load(video_id).crops
                    images.append(_fit(loaded[video_id][row], spec.input_size))
                    labels.append(label)
    except CacheError as exc:
        raise ReferenceError(f"--data {root}: {exc}") from None
    return images, labels


def _crops_from_folder(root: Path, size: int, n: int, rng: np.random.Generator) -> tuple[list, list]:
    import cv2

    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    picked = [files[i] for i in sorted(rng.choice(len(files), size=min(n, len(files)), replace=False))] if files else []
    images, labels = [], []
    for p in picked:
        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if bgr is None:
            continue  # unreadable file: skipped, the bundle records what it holds
        images.append(_fit(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), size))
        labels.append(next((v for k, v in LABEL_DIRS.items() if k in p.relative_to(root).parts[:-1]), -1))
    return images, labels


def load_face_crops(data: str | os.PathLike, spec: ModelSpec, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``n`` real face crops: from an aunet-prep face cache (a folder with cache.json), or from a folder
    of face-crop images (``real/`` and ``fake/`` sub-folders give labels).

    Returns (images [m, 3, S, S] float32 in [0, 1], labels [m] int64, -1 where unknown)."""
    root = Path(data)
    if not root.is_dir():
        raise ReferenceError(f"--data {root} is not a face cache or a folder of face crops")
    rng = np.random.default_rng(seed)
    if is_face_cache(root):
        images, labels = _crops_from_cache(root, spec, n, rng)
    else:
        images, labels = _crops_from_folder(root, spec.input_size, n, rng)
    if not images:
        raise ReferenceError(f"--data {root}: no readable face crops")
    return np.stack(images), np.asarray(labels, np.int64)


def torch_outputs(model: "torch.nn.Module", images: np.ndarray, batch: int = 8) -> dict[str, np.ndarray]:
    """The eval model's outputs of every deployed head, float32."""
    import torch

    was_training = model.training
    model.eval()
    parts: dict[str, list[np.ndarray]] = {k: [] for k in OUTPUT_NAMES}
    try:
        with torch.inference_mode():
            for i in range(0, len(images), batch):
                out = model(torch.from_numpy(images[i:i + batch]))
                for k in OUTPUT_NAMES:
                    parts[k].append(getattr(out, k).float().numpy())
    finally:
        model.train(was_training)
    return {k: np.concatenate(v) for k, v in parts.items()}


def make_reference(model: "torch.nn.Module", spec: ModelSpec, out_path: str | os.PathLike, *, samples: int = 8,
                   data: str | os.PathLike | None = None, seed: int = 0) -> Path:
    """Write ``model.ref.npz`` (atomically): ``samples`` inputs and the model's outputs on them."""
    if samples < 2:
        raise ReferenceError("a reference bundle needs at least 2 samples (batch 1 and a larger batch are checked)")
    if data is not None:
        images, labels = load_face_crops(data, spec, samples, seed)
        source = str(data)
    else:
        images, labels = synthetic_faces(samples, spec.input_size, seed), np.full(samples, -1, np.int64)
        source = "synthetic"
    outputs = torch_outputs(model, images)
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, image=images, label=labels, source=np.array(source), spec=np.array(spec.to_json()),
                            **outputs)
    return out_path


def load_reference(path: str | os.PathLike) -> dict[str, Any]:
    """{"image", "label", "source", "spec": ModelSpec, and every output} from a bundle (torch-free)."""
    path = Path(path)
    if not path.is_file():
        raise ReferenceError(f"reference bundle not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as exc:
        raise ReferenceError(f"{path}: not a readable reference bundle ({exc})") from None
    missing = [k for k in ("image", "spec", *OUTPUT_NAMES) if k not in data]
    if missing:
        raise ReferenceError(f"{path}: reference bundle lacks {', '.join(missing)}")
    try:
        data["spec"] = ModelSpec.from_json(str(data["spec"]))
    except SpecError as exc:
        raise ReferenceError(f"{path}: {exc}") from None
    data["source"] = str(data.get("source", "unknown"))
    data.setdefault("label", np.full(len(data["image"]), -1, np.int64))
    return data


__all__ = ["ReferenceError", "load_face_crops", "load_reference", "make_reference", "synthetic_faces", "torch_outputs"]
