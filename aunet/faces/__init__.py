"""Faces (torch-free): detection behind one interface, 68 landmarks, the crop contract, AU masks, the face cache.

Prep (``aunet-prep``), evaluation, calibration and the edge runtime all take their detectors and crops from
here, so training crops and deployment crops are cut the same way. Every detector is a ``FaceDetector``
(``name``, ``detect(rgb) -> list[Face]``, largest first): dlib's HOG (``dlib_hog``), RetinaFace as ONNX
(``retinaface``, numpy decoding) and RetinaFace in PyTorch (``retinaface_net``, the one module here that
imports torch, loaded only when its weights are used).
"""
from aunet.faces.base import DependencyError, Face, FaceDetector, largest_first
from aunet.faces.detectors import DETECTORS, RETINAFACE_WEIGHTS_ENV, find_retinaface_weights, make_detector, make_face_detector
from aunet.faces.dlib_hog import DlibHogDetector, LandmarkPredictor, default_predictor_path
from aunet.faces.retinaface import DETECTOR_METADATA_KEY, RetinaFaceConfig, RetinaFaceOnnx

__all__ = ["DETECTORS", "DETECTOR_METADATA_KEY", "DependencyError", "DlibHogDetector", "Face", "FaceDetector",
           "LandmarkPredictor", "RETINAFACE_WEIGHTS_ENV", "RetinaFaceConfig", "RetinaFaceOnnx",
           "default_predictor_path", "find_retinaface_weights", "largest_first", "make_detector",
           "make_face_detector"]
