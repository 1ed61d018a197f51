"""Prep (torch-free unless RetinaFace runs in PyTorch): videos and images -> the face cache that training,
evaluation and calibration read.

``inputs`` says what an INPUT names (``discover`` -> ``Job``s with labels, splits and FF++ methods); ``run``
cuts the faces (``PrepSettings``, ``run_prep`` over worker processes, resumable; ``prepare_labeled`` for a
labeled set, every face kept); ``cli`` is ``aunet-prep`` and ``aunet-prep preview``. Other rooms import from
here, not from the modules.
"""
from aunet.prep.inputs import (FFPP_COMPRESSIONS, FFPP_METHODS, FFPP_SPLITS, FFPPScan, Job, PrepError, discover,
                               in_ffpp_protocol, is_ffpp_video, media_kind, read_ffpp_pairs, scan_ffpp)
from aunet.prep.run import FACE_MODES, PrepResult, PrepSettings, prepare_labeled, run_prep

__all__ = ["FACE_MODES", "FFPP_COMPRESSIONS", "FFPP_METHODS", "FFPP_SPLITS", "FFPPScan", "Job", "PrepError",
           "PrepResult", "PrepSettings", "discover", "in_ffpp_protocol", "is_ffpp_video", "media_kind",
           "prepare_labeled", "read_ffpp_pairs", "run_prep", "scan_ffpp"]
