"""Shapes, outputs, determinism and weight loading of the AUNet model."""
import warnings

import pytest


@pytest.mark.parametrize("name,grid", [("small", 7), ("paper", 14)])
def test_forward_shapes(torch, name, grid):
    import aunet

    model = aunet.build_model(name).eval()
    cfg = model.cfg
    assert cfg.grid == grid and cfg.num_patches == grid * grid
    x = torch.rand(2, 3, cfg.img_size, cfg.img_size)
    with torch.no_grad():
        out = model(x)
        out_maps = model(x, return_au_maps=True)
    assert out.cls_logits.shape == (2, 2)
    assert out.patch_logits.shape == (2, grid * grid, 2)
    assert out.score.shape == (2,)
    assert ((out.score >= 0) & (out.score <= 1)).all()
    assert out.au_maps is None
    assert len(out_maps.au_maps) == cfg.num_encoders
    for m in out_maps.au_maps:
        assert m.shape == (2, cfg.num_aus, grid, grid)
        assert ((m >= 0) & (m <= 1)).all()  # sigmoid maps


@pytest.mark.parametrize("size", [64, 112, 224, 299, 384])
def test_grid_formula_matches_backbone(torch, size):
    from aunet.model.backbone import XceptionBackbone
    from aunet.config import xception_feature_grid

    bb = XceptionBackbone(depth=3).eval()
    with torch.no_grad():
        f = bb.blocks[2](bb.blocks[1](bb.blocks[0](bb.stem(torch.zeros(1, 3, size, size)))))
    assert f.shape[1] == 728
    assert f.shape[-1] == f.shape[-2] == xception_feature_grid(size)


def test_eval_is_deterministic(torch, small_model):
    small_model.eval()
    x = torch.rand(3, 3, 112, 112)
    with torch.no_grad():
        a, b = small_model(x), small_model(x)
    assert torch.equal(a.cls_logits, b.cls_logits) and torch.equal(a.patch_logits, b.patch_logits)
    # batch composition does not change a sample's result in eval mode
    with torch.no_grad():
        single = small_model(x[1:2])
    assert torch.allclose(single.cls_logits, a.cls_logits[1:2], atol=1e-5)


def test_score_fusion_options(torch, small_model):
    from aunet.model import fuse_score

    cls = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    patch = torch.tensor([[[0.0, -3.0], [0.0, 1.0]], [[0.0, 0.0], [2.0, 0.0]]])
    p_cls = torch.softmax(cls, -1)[:, 1]
    p_max = torch.softmax(patch, -1)[..., 1].amax(1)
    assert torch.allclose(fuse_score(cls, patch, "cls", 0.5), p_cls)
    assert torch.allclose(fuse_score(cls, patch, "patch_max", 0.5), p_max)
    assert torch.allclose(fuse_score(cls, patch, "cls_patchmax", 0.25), 0.25 * p_cls + 0.75 * p_max)
    # the model's score is that fusion of its own heads
    small_model.eval()
    with torch.no_grad():
        out = small_model(torch.rand(2, 3, 112, 112))
    cfg = small_model.cfg
    assert torch.allclose(out.score, fuse_score(out.cls_logits, out.patch_logits, cfg.score_fusion, cfg.score_cls_weight))


def test_wrong_input_size_is_a_clear_error(torch, small_model):
    with pytest.raises(ValueError, match=r"expected images \[B, 3, 112, 112\]"):
        small_model(torch.rand(1, 3, 224, 224))


def test_config_validation_and_round_trip():
    from aunet import ModelConfig
    from aunet.config import resolve_config

    cfg = ModelConfig.named("small")
    assert resolve_config(cfg.to_dict()) == cfg
    assert resolve_config(None) == ModelConfig() == resolve_config("paper")
    with pytest.raises(ValueError, match="unknown config"):
        ModelConfig.named("huge")
    with pytest.raises(ValueError, match="unknown ModelConfig fields"):
        ModelConfig.from_dict({"img_sise": 224})
    with pytest.raises(ValueError, match="score_fusion"):
        ModelConfig(score_fusion="mean")
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(embed_dim=100, num_heads=8)
    with pytest.raises(ValueError, match="fusion_channels"):
        ModelConfig(fusion_channels=-1)


def test_fusion_width(torch, small_model):
    """Eq. 7's two 3x3 convs: C -> C -> C in the paper's config (fusion_channels 0), C -> 128 -> C in the small one;
    a checkpoint config without the field (older runs) means the paper's width."""
    from aunet import ModelConfig, build_model

    def widths(model):
        fuse = model.encoders[0].fuse
        return [(seq[0].in_channels, seq[0].out_channels) for seq in fuse]

    assert widths(small_model) == [(728, 128), (128, 728)]
    wide = build_model(ModelConfig.named("small").replace(fusion_channels=0, num_encoders=1))
    assert widths(wide) == [(728, 728), (728, 728)]
    legacy = ModelConfig.named("small").to_dict()
    del legacy["fusion_channels"]
    assert ModelConfig.from_dict(legacy).fusion_channels == 0


def test_backbone_weights_from_a_local_file(torch, tmp_path):
    import timm

    import aunet
    from aunet.artifacts import file_sha256

    torch.manual_seed(3)
    ref = timm.create_model("legacy_xception", pretrained=False)
    path = tmp_path / "xception.pth"
    torch.save(ref.state_dict(), path)
    cfg = aunet.ModelConfig.named("small").replace(backbone_weights=str(path))
    model = aunet.build_model(cfg, pretrained=True)
    assert model.backbone_provenance == {"source": "file", "file": "xception.pth", "sha256": file_sha256(path)}
    assert torch.equal(model.backbone.conv1.weight, ref.conv1.weight)
    assert torch.equal(model.backbone.blocks[3].rep[1].pointwise.weight, ref.block4.rep[1].pointwise.weight)
    assert aunet.build_model("small").backbone_provenance == {"source": "random"}


def test_backbone_weights_bad_file_is_a_clear_error(torch, tmp_path):
    import aunet
    from aunet.model.backbone import BackboneWeightsError

    bad = tmp_path / "other.pth"
    torch.save({"foo.weight": torch.zeros(1)}, bad)
    with pytest.raises(BackboneWeightsError, match="not a legacy_xception checkpoint"):
        aunet.build_model(aunet.ModelConfig.named("small").replace(backbone_weights=str(bad)), pretrained=True)
    with pytest.raises(FileNotFoundError):
        aunet.build_model(
            aunet.ModelConfig.named("small").replace(backbone_weights=str(tmp_path / "missing.pth")), pretrained=True
        )
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not weights" * 20)
    with pytest.raises(BackboneWeightsError, match="cannot read backbone weights"):
        aunet.build_model(aunet.ModelConfig.named("small").replace(backbone_weights=str(garbage)), pretrained=True)


def offline_hub(monkeypatch):
    """timm's hub out of reach, whatever this machine's network and cache."""
    import timm

    real_create = timm.create_model

    def offline(name, pretrained=False, **kw):
        if pretrained:
            raise OSError("offline")
        return real_create(name, pretrained=False, **kw)

    monkeypatch.setattr(timm, "create_model", offline)


def test_backbone_hub_unreachable_is_an_error_never_a_silent_random_init(torch, monkeypatch):
    import aunet
    from aunet.model.backbone import BackboneWeightsError

    offline_hub(monkeypatch)
    cfg = aunet.ModelConfig.named("small").replace(backbone_weights="imagenet")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not a warning either: an error
        with pytest.raises(BackboneWeightsError, match="could not be fetched from timm's hub .OSError: offline.: pass "
                                                       "a local file with --backbone-weights FILE"):
            aunet.build_model(cfg, pretrained=True)
    assert aunet.build_model(cfg.replace(backbone_weights="none"), pretrained=True).backbone_provenance == {
        "source": "random"}


def test_backbone_from_the_hub_records_timms_name_tag_and_hash(torch, monkeypatch):
    """What timm's hub gives is recorded: the model, timm's tag, its URL and the sha256 prefix of its file name."""
    import timm

    import aunet

    real_create = timm.create_model

    def from_hub(name, pretrained=False, **kw):  # the hub's download, without the network
        torch.manual_seed(5)
        return real_create(name, pretrained=False, **kw)

    monkeypatch.setattr(timm, "create_model", from_hub)
    model = aunet.build_model(aunet.ModelConfig.named("small").replace(backbone_weights="imagenet"), pretrained=True)
    url = "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-cadene/xception-43020ad28.pth"
    assert model.backbone_provenance == {"source": "hub", "timm_name": "legacy_xception",
                                         "timm_version": timm.__version__, "tag": "tf_in1k", "url": url,
                                         "sha256_prefix": "43020ad28"}
    torch.manual_seed(5)
    ref = real_create("legacy_xception", pretrained=False, num_classes=0)
    assert torch.equal(model.backbone.conv1.weight, ref.conv1.weight)
