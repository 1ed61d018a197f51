"""AUNet face-forgery detection (CVPR 2023).

``import aunet`` stays light: no torch. The PyTorch parts (``build_model``, ``AUNet``) load on first use, so
the torch-free runtime (``aunet.runtime``) works on boxes without torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy import lazy_getattr

from .config import NAMED_CONFIGS, ModelConfig

__version__ = "0.1.0"
__all__ = ["AUNet", "AUNetOutput", "ModelConfig", "NAMED_CONFIGS", "build_model", "__version__"]

_LAZY = {"build_model": "aunet.model", "AUNet": "aunet.model", "AUNetOutput": "aunet.model"}

if TYPE_CHECKING:  # pragma: no cover
    from .model import AUNet, AUNetOutput, build_model

__getattr__ = lazy_getattr(__name__, _LAZY)
