"""INT8 calibration data and explicit Q/DQ quantization (installed as ``aunet.calibration``)."""
