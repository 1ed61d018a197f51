"""Implicit INT8 calibration for TensorRT <= 10 fleets (IInt8EntropyCalibrator2), reading the same calibration
set artifact. TensorRT 11 removed implicit calibration: there, the explicit Q/DQ ONNX (aunet-calib quantize) is
the only INT8 path. Written against the TensorRT 10 Python API; it needs TensorRT, pycuda and a GPU, so it is
not exercised on CPU-only machines.
"""
from __future__ import annotations

import os
from pathlib import Path

from aunet.io import atomic_write_bytes

from .dataset import CalibrationError, CalibrationSet


def implicit_calibration_supported(trt_version: str) -> bool:
    return int(trt_version.split(".")[0]) <= 10


def make_entropy_calibrator(calib: CalibrationSet, cache_path: str | os.PathLike, batch: int = 8):
    """An IInt8EntropyCalibrator2 feeding ``calib`` in batches of ``batch``; the cache file is read first (a
    cached calibration skips the data entirely) and written after calibration. Call with a CUDA context current
    (the engine builder's)."""
    import tensorrt as trt

    if not implicit_calibration_supported(trt.__version__):
        raise CalibrationError(f"TensorRT {trt.__version__} has no implicit INT8 calibration; "
                               "build from the explicit Q/DQ ONNX (aunet-calib quantize) instead")
    import numpy as np
    import pycuda.driver as cuda

    cache_path = Path(cache_path)

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.next = 0
            first = calib.model_inputs(0, batch)
            self.device = cuda.mem_alloc(int(np.prod((batch, *first.shape[1:]))) * 4)

        def get_batch_size(self) -> int:
            return batch

        def get_batch(self, names):  # noqa: ARG002 - one input
            if self.next + batch > len(calib):
                return None
            cuda.memcpy_htod(self.device, np.ascontiguousarray(calib.model_inputs(self.next, self.next + batch)))
            self.next += batch
            return [int(self.device)]

        def read_calibration_cache(self):
            return cache_path.read_bytes() if cache_path.is_file() else None

        def write_calibration_cache(self, cache) -> None:
            atomic_write_bytes(cache_path, bytes(cache))

    return EntropyCalibrator()
