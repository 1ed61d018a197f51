# The README's two commands: `make demo` and `make test`. Both set up .venv on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# timm needs torchvision; these two releases are a matching pair that pip finds offline here.
# Override on a GPU box, e.g. make TORCH_PKGS="torch torchvision" (pip then picks the CUDA build).
TORCH_PKGS ?= torch==2.14.1 torchvision==0.29.1
EXTRAS ?= train,export,dev
STAMP := $(VENV)/.installed-$(shell echo "$(TORCH_PKGS) $(EXTRAS)" | cksum | cut -d' ' -f1)

.PHONY: demo test bench bench-runtime gpu-check cli-docs clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_PKGS)
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	rm -f $(VENV)/.installed-* && touch $@

demo: $(STAMP)
	$(PY) -m aunet.demo --out demo

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(VENV)/bin/aunet-bench model --config paper --batch 1 --batch 8 --repeats 5 --json bench-model.json

bench-runtime: $(STAMP)
	mkdir -p build/bench
	$(PY) -c "import torch, aunet; from aunet.export.onnx_export import export_onnx; torch.manual_seed(0); export_onnx(aunet.build_model('paper').eval(), 'build/bench/paper.onnx')"
	$(PY) -m aunet.demo.sample_data build/bench/raw --images 64 --videos 0
	$(VENV)/bin/aunet-prep build/bench/raw --out build/bench/faces --size 224 --frames 1
	$(VENV)/bin/aunet-calib build build/bench/faces --model build/bench/paper.onnx --out build/bench/calib.npz
	$(VENV)/bin/aunet-calib quantize --model build/bench/paper.onnx --calib build/bench/calib.npz --target cpu --method max --out build/bench/paper.int8-cpu.onnx
	$(VENV)/bin/aunet-bench backends build/bench/paper.onnx build/bench/paper.int8-cpu.onnx --batch 1 --batch 8 --batch 32 --json bench-backends.json
	$(VENV)/bin/aunet-bench pipeline --engine build/bench/paper.onnx --seconds 4 --json bench-pipeline.json

gpu-check: $(STAMP)
	$(PY) scripts/gpu_check.py

cli-docs: $(STAMP)
	$(PY) scripts/cli_docs.py

clean:
	rm -rf $(VENV) build *.egg-info
