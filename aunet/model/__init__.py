"""The AUNet network (PyTorch): Xception to block11, three ART encoders, class and patch-token heads.

``build_model`` is the factory, as timm's ``create_model`` is; ``aunet.model.checkpoint`` saves and loads
weights. Losses and TAP live in ``aunet.tap``, outside the model, so export never sees them.
"""
from aunet.config import NAMED_CONFIGS, ModelConfig
from aunet.model.aunet import AUNet, AUNetOutput, autocast, autocast_dtype, build_model, fuse_score

__all__ = ["AUNet", "AUNetOutput", "ModelConfig", "NAMED_CONFIGS", "autocast", "autocast_dtype", "build_model",
           "fuse_score"]
