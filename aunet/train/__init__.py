"""Training (PyTorch): AUNet with Tampered AU Prediction on a face cache, ``aunet-train``.

``config`` (TrainConfig, the named runs "paper" and "small", config files) and ``preflight`` (checks of the
cache, the run folder and the files a config names) are torch-free, so the CLI refuses bad input before
PyTorch loads. ``data`` (datasets, batches, loaders over the cache), ``distributed`` (device, torchrun ranks),
``optim`` (optimizer, learning-rate schedule), ``stop`` (Ctrl-C as a clean stop), ``validation`` (scoring) and
``loop`` (``Trainer``: resume, step, validate, checkpoint; ``train`` runs one) make the run; ``cli`` is
``aunet-train``, also under ``torchrun -m aunet.train``. ``train`` and ``Trainer`` load PyTorch on first use.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from aunet.lazy import lazy_getattr

from aunet.train.config import NAMED_TRAIN_CONFIGS, TrainConfig, load_train_config
from aunet.train.errors import TrainError

__all__ = ["NAMED_TRAIN_CONFIGS", "TrainConfig", "TrainError", "Trainer", "load_train_config", "train"]

_LAZY = {"train": "aunet.train.loop", "Trainer": "aunet.train.loop"}

if TYPE_CHECKING:  # pragma: no cover
    from aunet.train.loop import Trainer, train

__getattr__ = lazy_getattr(__name__, _LAZY)
