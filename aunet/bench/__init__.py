"""The benchmark room (``aunet-bench``): what the model costs and how fast it runs where it is deployed.

``model_cost`` (the PyTorch model: parameters, GFLOPs, eager latency), ``backends`` (exported models on ONNX
Runtime / TensorRT beside PyTorch eager, each in its own process, and the thresholds they must clear),
``pipeline`` (``aunet-infer``'s whole video pipeline: frames/s and memory), ``measure`` (what they share: the
machine, timed calls, latency percentiles, memory) and ``cli`` (the command). Importing it needs no torch.
"""
