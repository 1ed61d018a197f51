"""RetinaFace (Deng et al. 2020, the paper's face detector) in PyTorch, laid out exactly as the public
Pytorch_Retinaface (biubug6) so its weight files load as they are: ``mobilenet0.25_Final.pth`` (MobileNetV1
x0.25 body) and ``Resnet50_Final.pth`` (torchvision ResNet-50 body). Weights only come from a local file.

Network: body -> FPN (strides 8, 16, 32) -> SSH context modules -> per level 1x1 heads with 2 anchors per
cell: class [N, 2] (softmax: background, face), box [N, 4], five landmarks [N, 10].
Input: BGR float, minus the mean (104, 117, 123), no scaling, NCHW.
Priors (anchors), in the order the heads emit them: for each level k (step 8, 16, 32; anchor sizes
(16, 32), (64, 128), (256, 512)), for each row i < ceil(H / step), column j < ceil(W / step), for each
size s: centre ((j + 0.5) * step / W, (i + 0.5) * step / H), size (s / W, s / H).
Decoding (variances 0.1, 0.2): centre = prior_c + loc[:2] * 0.1 * prior_s; size = prior_s * exp(loc[2:] * 0.2);
landmark m = prior_c + ldm[2m:2m+2] * 0.1 * prior_s; all in [0, 1] of the input, then scaled to pixels.
Detections: face score >= min_score, NMS at IoU 0.4. Priors, decoding and NMS are the torch-free runtime's
(aunet.faces.retinaface, whose RetinaFaceConfig holds the constants above), so aunet-prep's crops and the edge
box's crops come from the same post-processing.
"""
from __future__ import annotations

import dataclasses
import os
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from aunet.faces.base import DependencyError, Face, largest_first
from aunet.faces.retinaface import RetinaFaceConfig, decode_boxes, nms, prior_boxes

CONFIGS = {
    "mobilenet0.25": {"return_layers": {"stage1": 1, "stage2": 2, "stage3": 3}, "in_channel": 32, "out_channel": 64},
    "resnet50": {"return_layers": {"layer2": 1, "layer3": 2, "layer4": 3}, "in_channel": 256, "out_channel": 256},
}
ANCHORS = RetinaFaceConfig()  # Pytorch_Retinaface's mean, anchor sizes, steps and variances


def _conv_bn(inp, oup, stride=1, leaky=0.0):
    return nn.Sequential(nn.Conv2d(inp, oup, 3, stride, 1, bias=False), nn.BatchNorm2d(oup),
                         nn.LeakyReLU(negative_slope=leaky, inplace=True))


def _conv_bn_no_relu(inp, oup, stride):
    return nn.Sequential(nn.Conv2d(inp, oup, 3, stride, 1, bias=False), nn.BatchNorm2d(oup))


def _conv_bn1x1(inp, oup, stride, leaky=0.0):
    return nn.Sequential(nn.Conv2d(inp, oup, 1, stride, 0, bias=False), nn.BatchNorm2d(oup),
                         nn.LeakyReLU(negative_slope=leaky, inplace=True))


def _conv_dw(inp, oup, stride, leaky=0.1):
    return nn.Sequential(
        nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False), nn.BatchNorm2d(inp),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
        nn.Conv2d(inp, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup), nn.LeakyReLU(negative_slope=leaky, inplace=True),
    )


class MobileNetV1(nn.Module):
    """MobileNetV1 x0.25 (the body of mobilenet0.25_Final.pth)."""

    def __init__(self):
        super().__init__()
        self.stage1 = nn.Sequential(_conv_bn(3, 8, 2, leaky=0.1), _conv_dw(8, 16, 1), _conv_dw(16, 32, 2),
                                    _conv_dw(32, 32, 1), _conv_dw(32, 64, 2), _conv_dw(64, 64, 1))
        self.stage2 = nn.Sequential(_conv_dw(64, 128, 2), *[_conv_dw(128, 128, 1) for _ in range(5)])
        self.stage3 = nn.Sequential(_conv_dw(128, 256, 2), _conv_dw(256, 256, 1))


class SSH(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        leaky = 0.1 if cout <= 64 else 0.0
        self.conv3X3 = _conv_bn_no_relu(cin, cout // 2, 1)
        self.conv5X5_1 = _conv_bn(cin, cout // 4, 1, leaky)
        self.conv5X5_2 = _conv_bn_no_relu(cout // 4, cout // 4, 1)
        self.conv7X7_2 = _conv_bn(cout // 4, cout // 4, 1, leaky)
        self.conv7x7_3 = _conv_bn_no_relu(cout // 4, cout // 4, 1)

    def forward(self, x):
        c5_1 = self.conv5X5_1(x)
        return F.relu(torch.cat([self.conv3X3(x), self.conv5X5_2(c5_1), self.conv7x7_3(self.conv7X7_2(c5_1))], 1))


class FPN(nn.Module):
    def __init__(self, cins, cout):
        super().__init__()
        leaky = 0.1 if cout <= 64 else 0.0
        self.output1 = _conv_bn1x1(cins[0], cout, 1, leaky)
        self.output2 = _conv_bn1x1(cins[1], cout, 1, leaky)
        self.output3 = _conv_bn1x1(cins[2], cout, 1, leaky)
        self.merge1 = _conv_bn(cout, cout, leaky=leaky)
        self.merge2 = _conv_bn(cout, cout, leaky=leaky)

    def forward(self, feats):
        o1, o2, o3 = self.output1(feats[0]), self.output2(feats[1]), self.output3(feats[2])
        o2 = self.merge2(o2 + F.interpolate(o3, size=o2.shape[-2:], mode="nearest"))
        o1 = self.merge1(o1 + F.interpolate(o2, size=o1.shape[-2:], mode="nearest"))
        return [o1, o2, o3]


class _Head(nn.Module):
    def __init__(self, cin, outputs, anchors=2):
        super().__init__()
        self.outputs = outputs
        self.conv1x1 = nn.Conv2d(cin, anchors * outputs, 1)

    def forward(self, x):
        return self.conv1x1(x).permute(0, 2, 3, 1).reshape(x.shape[0], -1, self.outputs)


class RetinaFace(nn.Module):
    """forward(x BGR-minus-mean [B, 3, H, W]) -> (loc [B, N, 4], face probability [B, N], landmarks [B, N, 10])."""

    def __init__(self, network: str = "mobilenet0.25"):
        super().__init__()
        from torchvision.models._utils import IntermediateLayerGetter

        cfg = CONFIGS[network]
        if network == "resnet50":
            from torchvision.models import resnet50

            backbone = resnet50(weights=None)
        else:
            backbone = MobileNetV1()
        self.body = IntermediateLayerGetter(backbone, cfg["return_layers"])
        c, out = cfg["in_channel"], cfg["out_channel"]
        self.fpn = FPN([c * 2, c * 4, c * 8], out)
        self.ssh1, self.ssh2, self.ssh3 = SSH(out, out), SSH(out, out), SSH(out, out)
        self.ClassHead = nn.ModuleList([_Head(out, 2) for _ in range(3)])
        self.BboxHead = nn.ModuleList([_Head(out, 4) for _ in range(3)])
        self.LandmarkHead = nn.ModuleList([_Head(out, 10) for _ in range(3)])

    def forward(self, x):
        fpn = self.fpn(list(self.body(x).values()))
        feats = [self.ssh1(fpn[0]), self.ssh2(fpn[1]), self.ssh3(fpn[2])]
        loc = torch.cat([h(f) for h, f in zip(self.BboxHead, feats)], 1)
        conf = torch.cat([h(f) for h, f in zip(self.ClassHead, feats)], 1)
        ldm = torch.cat([h(f) for h, f in zip(self.LandmarkHead, feats)], 1)
        return loc, F.softmax(conf, dim=-1)[..., 1], ldm


def load_state(path: str | os.PathLike) -> tuple[str, dict]:
    """(network, state dict) from a Pytorch_Retinaface weight file ('module.' prefixes removed)."""
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt or foreign file
        raise DependencyError(f"cannot read RetinaFace weights {path}: {exc}") from None
    state = state.get("state_dict", state)
    state = OrderedDict((k[len("module."):] if k.startswith("module.") else k, v) for k, v in state.items())
    if any(k.startswith("body.stage1.") for k in state):
        return "mobilenet0.25", state
    if any(k.startswith("body.layer2.") for k in state):
        return "resnet50", state
    raise DependencyError(f"{path} is not a Pytorch_Retinaface weight file (mobilenet0.25 or resnet50)")


class RetinaFaceDetector:
    """A FaceDetector (aunet.faces) over RetinaFace. Frames are shrunk so that the longer side is at most
    ``max_side``; boxes come back in frame pixels, largest first."""

    name = "retinaface"

    def __init__(self, weights: str | os.PathLike, min_score: float = 0.7, nms_iou: float = 0.4,
                 max_side: int = 1280, device: str | None = None):
        network, state = load_state(Path(weights))
        self.model = RetinaFace(network)
        try:
            self.model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise DependencyError(f"{weights}: weights do not fit RetinaFace-{network}: {str(exc).splitlines()[0]}") from None
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.eval().to(self.device)
        self.network, self.min_score, self.nms_iou, self.max_side = network, min_score, nms_iou, max_side

    @torch.inference_mode()
    def detect(self, rgb: np.ndarray) -> list[Face]:
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError("expected an RGB uint8 image [H, W, 3]")
        h, w = rgb.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        img = rgb if scale == 1.0 else cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        ih, iw = img.shape[:2]
        x = torch.from_numpy(np.ascontiguousarray(img[..., ::-1], dtype=np.float32) - np.float32(ANCHORS.mean_bgr))
        loc, prob, _ = self.model(x.permute(2, 0, 1)[None].to(self.device))
        loc, prob = loc[0].float().cpu().numpy(), prob[0].float().cpu().numpy()
        keep = prob >= self.min_score
        if not keep.any():
            return []
        priors = prior_boxes(dataclasses.replace(ANCHORS, input_size=(ih, iw)))
        boxes = decode_boxes(loc[keep], priors[keep], ANCHORS.variance) * np.array([iw, ih, iw, ih], np.float32) / scale
        scores = prob[keep]
        faces = []
        for i in nms(boxes, scores, self.nms_iou):
            b = boxes[i].copy()
            b[[0, 2]] = b[[0, 2]].clip(0, w)
            b[[1, 3]] = b[[1, 3]].clip(0, h)
            if b[2] > b[0] and b[3] > b[1]:
                faces.append(Face(box=b.astype(np.float32), score=float(scores[i])))
        return largest_first(faces)
