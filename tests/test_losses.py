"""Losses (Eqs. 1, 19, 20) and one full TAP training step on the small config."""
import pytest


def test_attention_loss_is_huber_with_delta_half(torch):
    from aunet.tap.losses import attention_loss

    m = torch.tensor([[[[0.9, 0.1]]]])
    y = torch.tensor([[[[0.0, 0.0]]]])
    # |0.9| > δ: δ(|x| - δ/2) = 0.5 * 0.65 ; |0.1| <= δ: x²/2 = 0.005
    want = (0.5 * (0.9 - 0.25) + 0.5 * 0.1**2) / 2
    assert attention_loss([m, m], y).item() == pytest.approx(want)
    with pytest.raises(ValueError, match="does not match"):
        attention_loss([m], torch.zeros(1, 2, 1, 2))


def test_total_loss_weights(torch):
    from aunet.tap.losses import AUNetLoss, LossWeights
    from aunet.model import AUNetOutput

    torch.manual_seed(0)
    out = AUNetOutput(torch.randn(2, 2), torch.randn(2, 4, 2), torch.rand(2), (torch.rand(2, 3, 2, 2),))
    labels = torch.tensor([0, 1])
    tok = torch.tensor([[0, 0, 0, 0], [0, 1, 1, 0]])
    y = torch.rand(2, 3, 2, 2)
    terms = AUNetLoss(LossWeights())(out, labels, tok, y)
    assert terms["total"].item() == pytest.approx(terms["cls"].item() + 30 * terms["token"].item() + 0.5 * terms["att"].item())
    only_cls = AUNetLoss()(out, labels)
    assert set(only_cls) == {"cls", "total"} and only_cls["total"] == only_cls["cls"]


def test_tap_training_step_reaches_every_parameter(torch, small_model):
    """Real images + their fakes, Feature-level Mixing at a random stage, all three losses: every trainable
    parameter (attention modules included) gets a finite, non-zero gradient."""
    from aunet.tap.losses import AUNetLoss
    from aunet.tap import FeatureMixing, sample_mix_lambdas, token_labels

    torch.manual_seed(0)
    model = small_model.train()
    cfg = model.cfg
    half = 2
    real = torch.rand(half, 3, cfg.img_size, cfg.img_size)
    mask = torch.zeros(half, 1, cfg.img_size, cfg.img_size)
    mask[:, :, 30:90, 20:80] = 1.0
    fake = real * (1 - mask) + (real * 0.8 + 0.1) * mask
    images = torch.cat([real, fake])
    labels = torch.tensor([0] * half + [1] * half)
    tok = torch.cat([torch.zeros(half, cfg.num_patches, dtype=torch.long), token_labels(mask, cfg.grid)])
    assert tok[half:].sum() > 0
    y_att = torch.rand(2 * half, cfg.num_aus, cfg.grid, cfg.grid)
    stage = int(torch.randint(0, model.num_stages, (1,)))
    hook = FeatureMixing(stage, mask, sample_mix_lambdas(half))
    out = model(images, return_au_maps=True, stage_hook=hook)
    terms = AUNetLoss()(out, labels, tok, y_att)
    assert all(torch.isfinite(v) for v in terms.values())
    terms["total"].backward()
    dead = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not dead, dead
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_feature_mixing_changes_only_fake_outputs(torch, small_model):
    from aunet.tap import FeatureMixing

    torch.manual_seed(0)
    model = small_model.eval()
    x = torch.rand(4, 3, 112, 112)
    mask = torch.ones(2, 1, 112, 112)
    with torch.no_grad():
        plain = model(x)
        mixed = model(x, stage_hook=FeatureMixing(3, mask, (0.0, 0.0, 0.0)))
    assert torch.allclose(plain.cls_logits[:2], mixed.cls_logits[:2])
    assert not torch.allclose(plain.cls_logits[2:], mixed.cls_logits[2:])
