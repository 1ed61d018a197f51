"""Tampered AU Prediction (TAP, paper section 3.3): the training-only half of AUNet.

Image level (numpy, torch-free): ``masks`` (the partial face mask M_p) and ``sbi`` (self-blended fakes on it,
Eq. 9). Feature level and supervision (PyTorch): ``mixing`` (Feature-level Mixing, Eqs. 10-17), ``labels``
(per-token tamper labels, Eq. 18) and ``losses`` (Eqs. 1, 19, 20). ``preview`` draws TAP pairs for a person to
look at. The PyTorch parts load on first use, so the image-level parts never import torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from aunet.lazy import lazy_getattr

__all__ = ["FeatureMixing", "feature_mix", "make_tap_fake", "make_tap_pair", "partial_face_mask",
           "sample_mix_lambdas", "token_labels"]

_LAZY = {
    "FeatureMixing": "aunet.tap.mixing",
    "feature_mix": "aunet.tap.mixing",
    "sample_mix_lambdas": "aunet.tap.mixing",
    "token_labels": "aunet.tap.labels",
    "make_tap_fake": "aunet.tap.sbi",
    "make_tap_pair": "aunet.tap.sbi",
    "partial_face_mask": "aunet.tap.masks",
}

if TYPE_CHECKING:  # pragma: no cover
    from aunet.tap.labels import token_labels
    from aunet.tap.masks import partial_face_mask
    from aunet.tap.mixing import FeatureMixing, feature_mix, sample_mix_lambdas
    from aunet.tap.sbi import make_tap_fake, make_tap_pair

__getattr__ = lazy_getattr(__name__, _LAZY)
