"""The model spec: the one contract between training and deployment (torch-free).

Export writes it as JSON into the ONNX ``metadata_props`` (key ``aunet.spec``) and into an engine's sidecar
JSON; the runtime reads it from there and never duplicates these constants.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from .config import ModelConfig

SPEC_VERSION = 1
METADATA_KEY = "aunet.spec"
OUTPUT_NAMES = ("cls_logits", "patch_logits", "score")
CLASS_NAMES = ("real", "fake")


def fake_probability(logits: np.ndarray) -> np.ndarray:
    """softmax(logits)[..., 1] of two-class logits [..., 2] (index 1 = fake) as sigmoid(l1 - l0), in float64;
    the difference is clipped to +-60 so exp never overflows (sigmoid(60) is 1 in float64 anyway)."""
    diff = logits[..., 1].astype(np.float64) - logits[..., 0].astype(np.float64)
    return 1.0 / (1.0 + np.exp(-np.clip(diff, -60.0, 60.0)))


class SpecError(ValueError):
    """A spec that is missing, malformed, or does not match what it is used with."""


@dataclass(frozen=True)
class CropSpec:
    """How a face crop is cut from a frame (aunet.faces.crop implements it; training and the runtime share it).

    The crop is the square of side max(w, h) * (1 + 2 * margin) centred on the detector's face box; parts
    outside the frame are black (zero padding, so the face keeps its place and scale at frame edges); it is
    resized to the model's input size with INTER_AREA when shrinking and INTER_LINEAR when enlarging.
    """

    margin: float = 0.15  # of the box side, on each side: the crop side is 1.3x the face box
    square: bool = True
    pad_value: int = 0


@dataclass(frozen=True)
class ModelSpec:
    model: dict[str, Any]  # ModelConfig.to_dict()
    input_name: str = "image"
    input_layout: str = "NCHW"
    color: str = "RGB"
    value_range: tuple[float, float] = (0.0, 1.0)
    crop: CropSpec = field(default_factory=CropSpec)
    output_names: tuple[str, ...] = OUTPUT_NAMES
    class_names: tuple[str, ...] = CLASS_NAMES
    threshold: float = 0.5  # verdict "fake" when score >= threshold
    provenance: dict[str, Any] = field(default_factory=dict)  # checkpoint hash, exporter versions, ...
    spec_version: int = SPEC_VERSION
    # The face detector and face policy the training crops were cut with ({"detector": name, "policy": {...}},
    # aunet.faces.policy); the runtime detects with them. Empty in specs written before it existed.
    faces: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: ModelConfig, **kwargs: Any) -> "ModelSpec":
        return cls(model=cfg.to_dict(), **kwargs)

    @property
    def config(self) -> ModelConfig:
        return ModelConfig.from_dict(self.model)

    @property
    def input_size(self) -> int:
        return int(self.model["img_size"])

    @property
    def patch_grid(self) -> tuple[int, int]:
        g = self.config.grid
        return (g, g)

    @property
    def num_patches(self) -> int:
        return self.config.num_patches

    @property
    def precision(self) -> str:
        """Numeric precision of the artifact this spec travels with: "fp32" (export), "fp16" or "int8"."""
        return str(self.provenance.get("precision", "fp32"))

    def output_shapes(self, batch: int) -> dict[str, tuple[int, ...]]:
        return {"cls_logits": (batch, 2), "patch_logits": (batch, self.num_patches, 2), "score": (batch,)}

    def with_provenance(self, **entries: Any) -> "ModelSpec":
        """A copy whose provenance has ``entries`` added (e.g. the precision of a derived ONNX)."""
        return dataclasses.replace(self, provenance={**self.provenance, **entries})

    @property
    def score_fusion(self) -> dict[str, Any]:
        return {"method": self.model["score_fusion"], "cls_weight": self.model["score_cls_weight"]}

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["input_size"] = [self.input_size, self.input_size]
        d["patch_grid"] = list(self.patch_grid)
        d["score_fusion"] = self.score_fusion
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelSpec":
        try:
            version = int(data.get("spec_version", -1))
            if version != SPEC_VERSION:
                raise SpecError(f"spec version {version} is not supported (this build reads {SPEC_VERSION})")
            spec = cls(
                model=dict(data["model"]),
                input_name=str(data["input_name"]),
                input_layout=str(data["input_layout"]),
                color=str(data["color"]),
                value_range=tuple(float(v) for v in data["value_range"]),
                crop=CropSpec(**data["crop"]),
                output_names=tuple(data["output_names"]),
                class_names=tuple(data["class_names"]),
                threshold=float(data["threshold"]),
                provenance=dict(data.get("provenance", {})),
                faces=dict(data.get("faces") or {}),
            )
            spec.config  # validates the model fields
        except SpecError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise SpecError(f"malformed model spec: {exc}") from None
        return spec

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"model spec is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise SpecError("model spec must be a JSON object")
        return cls.from_dict(data)

    def check_compatible(self, other: "ModelSpec") -> None:
        """Raise SpecError when two specs disagree on anything that changes inputs or outputs."""
        mine, theirs = self.to_dict(), other.to_dict()
        for d in (mine, theirs):  # where the backbone's init weights came from does not change the graph
            d["model"] = {k: v for k, v in d["model"].items() if k not in ("backbone_weights", "name")}
        for key in ("model", "input_name", "input_layout", "color", "value_range", "crop", "output_names"):
            if mine[key] != theirs[key]:
                raise SpecError(f"model spec mismatch in {key!r}: {mine[key]!r} != {theirs[key]!r}")
