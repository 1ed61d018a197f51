"""aunet.metrics against scikit-learn on random data (with ties), and the video-level protocol."""
import math
import subprocess
import sys

import numpy as np
import pytest

from aunet import metrics

sk = pytest.importorskip("sklearn.metrics")


@pytest.mark.parametrize("seed", range(6))
def test_auc_ap_roc_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 400))
    y = rng.integers(0, 2, n)
    y[:2] = (0, 1)
    # rounded scores create many ties, the case where hand-written AUCs usually go wrong
    s = np.round(rng.random(n) + 0.3 * y, int(rng.integers(1, 4)))
    assert metrics.roc_auc(y, s) == pytest.approx(sk.roc_auc_score(y, s), abs=1e-12)
    assert metrics.average_precision(y, s) == pytest.approx(sk.average_precision_score(y, s), abs=1e-12)
    fpr, tpr, _ = metrics.roc_curve(y, s)
    sk_fpr, sk_tpr, _ = sk.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    assert metrics.accuracy(y, s, 0.5) == pytest.approx(sk.accuracy_score(y, (s >= 0.5).astype(int)))


def test_eer_is_where_fpr_equals_fnr():
    rng = np.random.default_rng(7)
    y = np.r_[np.zeros(2000), np.ones(2000)].astype(int)
    s = np.r_[rng.normal(0, 1, 2000), rng.normal(2, 1, 2000)]
    # two unit Gaussians 2 apart: EER = Φ(-1) ≈ 0.1587
    assert metrics.equal_error_rate(y, s) == pytest.approx(0.1587, abs=0.015)
    assert metrics.equal_error_rate([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 0.0
    assert metrics.equal_error_rate([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 1.0


def test_undefined_metrics_are_nan_not_errors():
    assert math.isnan(metrics.roc_auc([1, 1], [0.2, 0.3]))
    assert math.isnan(metrics.equal_error_rate([0, 0], [0.2, 0.3]))
    m = metrics.binary_metrics([0, 0, 0], [0.1, 0.6, 0.2])
    assert math.isnan(m["auc"]) and m["accuracy"] == pytest.approx(2 / 3) and m["n_real"] == 3
    with pytest.raises(ValueError):
        metrics.roc_auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError):
        metrics.roc_auc([0, 1], [0.1, float("nan")])


def test_video_scores_max_over_faces_then_mean_over_frames():
    videos = ["a", "a", "a", "a", "b"]
    frames = [0, 0, 1, 2, 0]
    faces = [0.1, 0.9, 0.3, 0.6, 0.4]
    out = metrics.video_scores(videos, frames, faces)
    assert out["a"] == pytest.approx((0.9 + 0.3 + 0.6) / 3)
    assert out["b"] == pytest.approx(0.4)


def test_metrics_module_is_torch_free():
    code = "import sys, aunet.metrics; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
