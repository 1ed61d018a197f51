"""Deployment artifacts (installed as ``aunet.export``): ONNX, FP16/INT8 variants, TensorRT engines, verification."""
