"""aunet-serve: the torch-free Detector behind NVIDIA Triton (PyTriton), for many clients on one model."""
