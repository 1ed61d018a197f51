"""Feature-level Mixing (Eqs. 10-17) and token labels (Eq. 18) against plain per-sample implementations."""
import pytest


def plain_feature_mix(fr, ff, mask, l1, l2, l3, eps):
    """Eqs. 10-17 written sample by sample, channel by channel, straight from the paper."""
    out = ff.clone()
    b, c, _, _ = ff.shape
    for i in range(b):
        m = mask[i, 0]
        area = m.sum()
        for ch in range(c):
            r, f = fr[i, ch], ff[i, ch]
            mu_r, mu_f = (r * m).sum() / area, (f * m).sum() / area
            sd_r = (((r - mu_r) ** 2 * m).sum() / area + eps).sqrt()
            sd_f = (((f - mu_f) ** 2 * m).sum() / area + eps).sqrt()
            nr, nf = (r - mu_r) * m / sd_r, (f - mu_f) * m / sd_f
            mu_s = l1[i] * mu_f + (1 - l1[i]) * mu_r
            sd_s = l2[i] * sd_f + (1 - l2[i]) * sd_r
            ns = l3[i] * nf + (1 - l3[i]) * nr
            out[i, ch] = f * (1 - m) + sd_s * ns + mu_s * m
    return out


@pytest.mark.parametrize("per_sample", [False, True])
def test_feature_mix_matches_plain_equations(torch, per_sample):
    from aunet.tap import feature_mix

    torch.manual_seed(0)
    b, c, h, w = 3, 5, 6, 7
    fr = torch.randn(b, c, h, w, dtype=torch.float64) * 2 + 1
    ff = torch.randn(b, c, h, w, dtype=torch.float64) - 0.5
    mask = torch.rand(b, 1, h, w, dtype=torch.float64)
    mask[:, :, :2] = 0  # a region the mixing must leave alone
    if per_sample:
        lam = [torch.rand(b, dtype=torch.float64) for _ in range(3)]
    else:
        lam = [0.3, 0.7, 0.2]
    got = feature_mix(fr, ff, mask, lam, eps=1e-6)
    lam_list = [l if per_sample else torch.full((b,), l, dtype=torch.float64) for l in lam]
    want = plain_feature_mix(fr, ff, mask, *lam_list, eps=1e-6)
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)
    assert torch.equal(got[:, :, :2], ff[:, :, :2])  # outside M'_p the fake feature is untouched


def test_feature_mix_extremes(torch):
    from aunet.tap import feature_mix

    torch.manual_seed(0)
    fr, ff = torch.randn(2, 3, 4, 4, dtype=torch.float64), torch.randn(2, 3, 4, 4, dtype=torch.float64)
    mask = (torch.rand(2, 1, 4, 4) > 0.4).double()
    # λ = 1 everywhere keeps the fake feature (Eqs. 13-16 reduce to F_f ⊙ M'_p)
    assert torch.allclose(feature_mix(fr, ff, mask, [1.0, 1.0, 1.0], eps=0.0), ff, atol=1e-12)
    # an empty mask leaves the fake as it is, without NaN
    assert torch.equal(feature_mix(fr, ff, torch.zeros_like(mask), [0.5, 0.5, 0.5]), ff)
    # λ = 0 moves the masked region's statistics to the real one's
    mixed = feature_mix(fr, ff, torch.ones_like(mask), [0.0, 0.0, 0.0], eps=0.0)
    assert torch.allclose(mixed, fr, atol=1e-10)


def test_feature_mix_rejects_bad_shapes(torch):
    from aunet.tap import feature_mix

    f = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match="mask"):
        feature_mix(f, f, torch.zeros(2, 1, 2, 2), [0.5] * 3)
    with pytest.raises(ValueError, match=r"\[2\] tensor"):
        feature_mix(f, f, torch.zeros(2, 1, 4, 4), [torch.zeros(3), 0.5, 0.5])


def test_token_labels_area_average_strict_threshold_row_major(torch):
    from aunet.tap import token_labels

    mask = torch.zeros(2, 1, 4, 4)
    mask[0, 0, 0:2, 2:4] = 1.0  # top-right cell fully tampered
    mask[0, 0, 2:4, 0:2] = torch.tensor([[1.0, 1.0], [0.0, 0.0]])  # bottom-left: exactly 0.5 -> not > t
    mask[0, 0, 2:4, 2:4] = torch.tensor([[1.0, 1.0], [1.0, 0.0]])  # bottom-right: 0.75
    labels = token_labels(mask, grid=2)
    assert labels.dtype == torch.int64
    assert labels.tolist() == [[0, 1, 0, 1], [0, 0, 0, 0]]
    assert token_labels(mask, grid=2, threshold=0.4).tolist()[0] == [0, 1, 1, 1]


def test_feature_mixing_hook_touches_only_the_fakes_at_its_stage(torch):
    from aunet.tap import FeatureMixing, feature_mix

    torch.manual_seed(0)
    x = torch.randn(4, 3, 7, 7)
    mask = torch.rand(2, 1, 112, 112)
    hook = FeatureMixing(stage=5, mask=mask, lambdas=(0.2, 0.4, 0.6))
    assert hook(4, x) is x
    y = hook(5, x)
    assert torch.equal(y[:2], x[:2])
    small = torch.nn.functional.adaptive_avg_pool2d(mask, 7)
    assert torch.allclose(y[2:], feature_mix(x[:2], x[2:], small, (0.2, 0.4, 0.6)))


def test_mix_lambdas_in_unit_interval(torch):
    from aunet.tap import sample_mix_lambdas

    torch.manual_seed(0)
    lams = sample_mix_lambdas(64)
    assert all(l.shape == (64,) and (l >= 0).all() and (l <= 1).all() for l in lams)
    assert len({round(float(l.std()), 3) for l in lams}) > 1  # three independent draws
    # never more real than fake: each weight in [0.5, 1], spread over it
    assert all((l >= 0.5).all() for l in lams)
    assert all((l < 0.9).any() and (l > 0.99).any() for l in lams)
