# The README's two commands: `make demo` and `make test`. Both set up .venv on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# timm needs torchvision; these two releases are a matching pair that pip finds offline here.
# Override on a GPU box, e.g. make TORCH_PKGS="torch torchvision" (pip then picks the CUDA build).
TORCH_PKGS ?= torch==2.14.1 torchvision==0.29.1
EXTRAS ?= train,export,dev
STAMP := $(VENV)/.installed-$(shell echo "$(TORCH_PKGS) $(EXTRAS)" | cksum | cut -d' ' -f1)

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_PKGS)
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	rm -f $(VENV)/.installed-* && touch $@

demo: $(STAMP)
	$(VENV)/bin/aunet-bench model --config paper --batch 1 --batch 8

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(VENV)/bin/aunet-bench model --config paper --batch 1 --batch 8 --repeats 5 --json bench-model.json

clean:
	rm -rf $(VENV) build *.egg-info
