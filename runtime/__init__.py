"""Torch-free inference runtime for edge boxes (installed as ``aunet.runtime``)."""
