"""Training and validation data over a face cache (aunet.faces.cache, built by aunet-prep): which videos a run
uses (open_training_data), the faces of each epoch, TAP pairs, batches and loaders.

Cross-dataset protocol (the paper's default, Tables 2-3): real faces only; each item is a real crop and its
TAP fake with the tampered-region mask M_p (aunet.tap.sbi.make_tap_pair in training, so that, as in SBI, the
augmentation lands on either image and cannot be the cue; make_tap_fake on untouched held-out crops for
validation). In-dataset protocol (Table 1): real and fake faces with the cache's labels, ART without TAP: no
fakes are made, hence no M_p, no token labels and no Feature-level Mixing; the AU attention target Y_Att still
supervises the attention modules (it only needs landmarks). Every random draw of an item comes from a NumPy
generator seeded by (seed, epoch, index), so an item is the same whichever worker or rank makes it, and a
resumed run sees the very same data.
"""
from __future__ import annotations

import signal
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from aunet.config import ModelConfig
from aunet.prep import in_ffpp_protocol, is_ffpp_video
from aunet.tap import token_labels
from aunet.train.config import PROTOCOLS, TrainConfig
from aunet.train.errors import TrainError

REAL, FAKE, UNLABELED = 0, 1, -1
_VALIDATION_STREAM = 0x5EED_0F_7A1  # seeds validation fakes apart from any training epoch


class DataError(ValueError):
    """A dataset that cannot be trained on (empty cache, no usable faces, missing labels)."""


@dataclass(frozen=True)
class FaceRef:
    """One face of one video in the cache: the row of VideoFaces' arrays and the label used for training."""

    video_id: str
    row: int
    label: int


def ffpp_refusal(rec: Any) -> str:
    """Why the paper's FF++ protocol keeps a video of an FF++ cache out of training ("" when it may train): a
    folder outside the protocol (DeepFakeDetection, FaceShifter, ...), or no train/val split (a cache made
    before splits were required, or by hand). Videos of other inputs are never refused here."""
    if not is_ffpp_video(rec.video_id):
        return ""
    if not in_ffpp_protocol(rec.video_id):
        return "outside the paper's FF++ protocol"
    if rec.split not in ("train", "val"):
        return "no train/val split"
    return ""


def usable_records(cache: Any, protocol: str, refused: Optional[Counter] = None) -> list[Any]:
    """The cache's videos a protocol trains on: with faces, not failed; cross uses reals (label 0, or -1 =
    unlabeled, e.g. a folder of real faces), in needs labels 0/1. Test-split videos are never trained on, nor
    are FF++ videos that ffpp_refusal keeps out (counted by reason in ``refused``)."""
    if protocol not in PROTOCOLS:
        raise DataError(f"unknown protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")
    out = []
    for rec in cache.videos():
        if rec.num_faces <= 0 or not rec.ok or rec.split == "test":
            continue
        if protocol == "cross" and rec.label == FAKE:
            continue
        if protocol == "in" and rec.label not in (REAL, FAKE):
            continue
        reason = ffpp_refusal(rec)
        if reason:
            if refused is not None:
                refused[reason] += 1
            continue
        out.append(rec)
    return sorted(out, key=lambda r: r.video_id)


def split_train_val(records: Sequence[Any], val_fraction: float, seed: int) -> tuple[list[Any], list[Any], str]:
    """(train, val, where val comes from). The cache's "val" split when it has one; else a seeded hold-out of
    ``val_fraction`` of the videos (at least one when there are two or more); a single video validates on
    itself (reported as such, so nobody mistakes it for a held-out number)."""
    val = [r for r in records if r.split == "val"]
    train = [r for r in records if r.split != "val"]
    if val and train:
        return train, val, "cache val split"
    records = list(records)
    if len(records) < 2:
        return records, records, "training faces (too few videos to hold any out)"
    n_val = min(len(records) - 1, max(1, int(round(val_fraction * len(records)))))
    order = np.random.default_rng([seed, _VALIDATION_STREAM]).permutation(len(records))
    held = set(order[:n_val].tolist())
    return (
        [r for i, r in enumerate(records) if i not in held],
        [r for i, r in enumerate(records) if i in held],
        f"{n_val} held-out video(s)",
    )


def sample_faces(records: Sequence[Any], frames_per_video: int, seed: int, epoch: int) -> list[FaceRef]:
    """Up to ``frames_per_video`` faces per video, drawn afresh each epoch (the paper's 8 frames per video)."""
    rng = np.random.default_rng([seed, epoch])
    refs = []
    for rec in records:
        k = min(frames_per_video, rec.num_faces)
        rows = np.sort(rng.choice(rec.num_faces, size=k, replace=False))
        refs.extend(FaceRef(rec.video_id, int(r), int(rec.label)) for r in rows)
    return refs


def fit_face(crop: np.ndarray, landmarks: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A cached crop (and its landmarks) at the model's input size: INTER_AREA shrinking, INTER_LINEAR enlarging,
    as CropSpec prescribes."""
    side = crop.shape[0]
    if side == size:
        return crop, landmarks
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interp), landmarks * (size / side)


def _chw_uint8(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def attention_target(landmarks: np.ndarray, size: int, grid: int) -> torch.Tensor:
    """Y_Att [K, grid, grid]: the AU masks at image size, area-resized to the feature grid."""
    from aunet.faces.au_masks import au_masks, downsample_masks

    return torch.from_numpy(np.ascontiguousarray(downsample_masks(au_masks(landmarks, size), grid)))


class FaceDataset(Dataset):
    """Faces of a FaceCache for one protocol. ``fixed=True`` (validation) keeps the same faces and the same
    TAP fakes every epoch, so validation AUCs are comparable across epochs."""

    def __init__(
        self,
        cache_dir: str | Path,
        records: Sequence[Any],
        cfg: ModelConfig,
        protocol: str = "cross",
        frames_per_video: int = 8,
        seed: int = 0,
        fixed: bool = False,
        max_videos_in_memory: int = 8,
    ):
        if protocol not in PROTOCOLS:
            raise DataError(f"unknown protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")
        self.cache_dir = Path(cache_dir)
        self.records = list(records)
        self.cfg = cfg
        self.protocol = protocol
        self.frames_per_video = frames_per_video
        self.seed = seed
        self.fixed = fixed
        self.max_videos_in_memory = max_videos_in_memory
        self._cache = None  # opened lazily in each worker process
        self._videos: OrderedDict[str, Any] = OrderedDict()
        self.epoch = 0
        self.faces = sample_faces(self.records, frames_per_video, seed, _VALIDATION_STREAM if fixed else 0)

    def set_epoch(self, epoch: int) -> None:
        """Draw this epoch's faces (training); a fixed dataset keeps its faces."""
        self.epoch = epoch
        if not self.fixed:
            self.faces = sample_faces(self.records, self.frames_per_video, self.seed, epoch)

    def __len__(self) -> int:
        return len(self.faces)

    def __getstate__(self) -> dict:  # workers open their own cache handle
        state = dict(self.__dict__)
        state["_cache"], state["_videos"] = None, OrderedDict()
        return state

    def _video(self, video_id: str) -> Any:
        if video_id in self._videos:
            self._videos.move_to_end(video_id)
            return self._videos[video_id]
        if self._cache is None:
            from aunet.faces.cache import FaceCache

            self._cache = FaceCache(self.cache_dir)
        faces = self._cache.load(video_id)
        self._videos[video_id] = faces
        while len(self._videos) > self.max_videos_in_memory:
            self._videos.popitem(last=False)
        return faces

    def __getitem__(self, index: int) -> dict[str, Any]:
        ref = self.faces[index]
        faces = self._video(ref.video_id)
        size, grid = self.cfg.img_size, self.cfg.grid
        crop, landmarks = fit_face(faces.crops[ref.row], np.asarray(faces.landmarks[ref.row], np.float32), size)
        y_att = attention_target(landmarks, size, grid)
        if self.protocol == "in":
            return {"image": _chw_uint8(crop), "label": ref.label, "y_att": y_att}
        from aunet.tap.sbi import make_tap_fake, make_tap_pair

        if self.fixed:  # validation: the held-out real crop as it is, and its TAP fake
            real = crop
            fake, m_p = make_tap_fake(crop, landmarks, np.random.default_rng([self.seed, _VALIDATION_STREAM, index]))
        else:  # training: SBI's pairing, where either side may carry the colour/frequency augmentation
            real, fake, m_p = make_tap_pair(crop, landmarks, np.random.default_rng([self.seed, self.epoch, index]))
        return {
            "real": _chw_uint8(real),
            "fake": _chw_uint8(fake),
            "mask": torch.from_numpy(np.ascontiguousarray(m_p, dtype=np.float32))[None],
            "y_att": y_att,
        }


def collate_pairs(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Cross protocol: images = the reals, then their fakes in the same order (FeatureMixing's contract).

    images uint8 [2B, 3, S, S]; labels [2B] (0 then 1); mask = M_p of the fakes [B, 1, S, S] at image size;
    token_labels [2B, n] (all zero for reals, Eq. 18 for fakes); y_att [2B, K, g, g] (a fake keeps its real's
    face geometry, so it shares its Y_Att).
    """
    b = len(items)
    mask = torch.stack([it["mask"] for it in items])
    y_att = torch.stack([it["y_att"] for it in items])
    grid = y_att.shape[-1]
    fake_tokens = token_labels(mask, grid)
    return {
        "images": torch.cat([torch.stack([it["real"] for it in items]), torch.stack([it["fake"] for it in items])]),
        "labels": torch.cat([torch.zeros(b, dtype=torch.long), torch.ones(b, dtype=torch.long)]),
        "mask": mask,
        "token_labels": torch.cat([torch.zeros_like(fake_tokens), fake_tokens]),
        "y_att": torch.cat([y_att, y_att]),
    }


def collate_labeled(items: list[dict[str, Any]]) -> dict[str, Any]:
    """In-dataset protocol: labeled faces, no TAP (mask and token_labels are None: L_token is dropped)."""
    return {
        "images": torch.stack([it["image"] for it in items]),
        "labels": torch.tensor([it["label"] for it in items], dtype=torch.long),
        "mask": None,
        "token_labels": None,
        "y_att": torch.stack([it["y_att"] for it in items]),
    }


def collate_for(protocol: str):
    return collate_pairs if protocol == "cross" else collate_labeled


def items_per_batch(protocol: str, batch_size: int) -> int:
    """Dataset items per batch: the cross protocol's items are pairs, so a batch of 32 is 16 reals + 16 fakes."""
    if protocol == "cross":
        if batch_size < 2 or batch_size % 2:
            raise DataError(f"the cross protocol needs an even batch size (reals + their fakes), got {batch_size}")
        return batch_size // 2
    if batch_size < 1:
        raise DataError(f"batch size must be positive, got {batch_size}")
    return batch_size


@dataclass(frozen=True)
class TrainingData:
    """The videos a run trains and validates on, and the dataset items in each batch."""

    train: list[Any]
    val: list[Any]
    val_source: str  # where the validation videos come from, for the run's log
    batch_items: int
    refused: dict = field(default_factory=dict)  # FF++ videos kept out of training: reason -> count


def open_training_data(cache: Any, cfg: TrainConfig) -> TrainingData:
    """The cache's videos for ``cfg.protocol``, split into training and validation; TrainError when the cache
    cannot train that protocol."""
    data_dir = cache.root
    refused: Counter = Counter()
    try:
        records = usable_records(cache, cfg.protocol, refused)
        batch_items = items_per_batch(cfg.protocol, cfg.batch_size)
    except (DataError, OSError, ValueError) as exc:
        raise TrainError(f"--data {data_dir}: {exc}") from None
    if not records:
        wanted = "real faces (label 0 or unlabeled)" if cfg.protocol == "cross" else "labeled faces (0 real / 1 fake)"
        why = f" (FF++ videos kept out: {refused_text(refused)})" if refused else ""
        raise TrainError(f"--data {data_dir}: the cache has no usable {wanted} for the {cfg.protocol} protocol{why}")
    if cfg.protocol == "in" and len({r.label for r in records}) < 2:
        raise TrainError(f"--data {data_dir}: the in-dataset protocol needs both real and fake videos")
    train, val, val_source = split_train_val(records, cfg.val_fraction, cfg.seed)
    return TrainingData(train, val, val_source, batch_items, dict(refused))


def refused_text(refused: dict) -> str:
    """``3 outside the paper's FF++ protocol, 1 no train/val split``"""
    return ", ".join(f"{n} {reason}" for reason, n in sorted(refused.items()))


class SkipSampler(Sampler):
    """The epoch's (distributed) order minus the items already trained on: a resumed epoch goes on exactly."""

    def __init__(self, base: Sampler, skip: int):
        self.base, self.skip = base, skip

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.base)[self.skip :])

    def __len__(self) -> int:
        return max(0, len(self.base) - self.skip)


def ignore_stop_signals(_worker_id: int) -> None:
    """A DataLoader worker's start: SIGINT and SIGTERM ignored. Ctrl-C and a SIGTERM to the whole process group
    (SLURM's preemption, ``timeout``) reach the workers too; killed, they would take the trainer down with a
    RuntimeError mid-step. Ignoring them leaves the stop to the trainer, which finishes its step, writes
    last.pt and closes the loader (and its workers) itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def make_loader(dataset, batch_items: int, sampler, collate, workers: int, seed: int, device: torch.device) -> DataLoader:
    # An explicit generator: DataLoader would otherwise draw its worker seed from torch's global RNG, and a
    # resumed run would then draw different Beta mixing weights than an uninterrupted one.
    return DataLoader(
        dataset, batch_size=batch_items, sampler=sampler,
        collate_fn=collate, num_workers=workers, pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(seed), drop_last=False,
        worker_init_fn=ignore_stop_signals if workers > 0 else None,
    )
