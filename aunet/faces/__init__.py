"""Faces (torch-free): detection behind one interface, 68 landmarks, the crop contract, AU masks, the face cache.

Prep (``aunet-prep``), evaluation, calibration and the edge runtime all take their detectors and crops from
here, so training crops and deployment crops are cut the same way. Every detector is a ``FaceDetector``
(``name``, ``detect(rgb) -> list[Face]``, largest first): dlib's HOG (``dlib_hog``), RetinaFace as ONNX
(``retinaface``, numpy decoding), RetinaFace in PyTorch (``retinaface_net``, the one module here that
imports torch, loaded only when its weights are used), and the learned ONNX detectors BlazeFace (``blazeface``,
MediaPipe's weights converted from TFLite by ``tflite_onnx``) and YuNet (``yunet``), which share their detector
spec and session (``onnx_detector``). ``policy`` decides which detected faces prep and the runtime keep.
"""
from aunet.faces.base import DependencyError, DetectorModelError, Face, FaceDetector, largest_first
from aunet.faces.detectors import (DETECTORS, RETINAFACE_WEIGHTS_ENV, find_retinaface_weights, make_detector,
                                   make_face_detector, open_onnx_detector)
from aunet.faces.dlib_hog import DlibHogDetector, LandmarkPredictor, default_predictor_path
from aunet.faces.policy import FacePolicy, apply_face_policy
from aunet.faces.retinaface import DETECTOR_METADATA_KEY, RetinaFaceConfig, RetinaFaceOnnx

__all__ = ["DETECTORS", "DETECTOR_METADATA_KEY", "DependencyError", "DetectorModelError", "DlibHogDetector", "Face",
           "FaceDetector", "FacePolicy", "LandmarkPredictor", "RETINAFACE_WEIGHTS_ENV", "RetinaFaceConfig",
           "RetinaFaceOnnx", "apply_face_policy", "default_predictor_path", "find_retinaface_weights", "largest_first",
           "make_detector", "make_face_detector", "open_onnx_detector"]
