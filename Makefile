# Two entry points, both working from a clean clone on a fresh machine:
#   make demo   set up .venv and run the main job
#   make test   set up .venv (and .peer-venv for the peer tests) and run every test CI runs
PYTHON ?= python3
VENV := .venv
PEER_VENV := .peer-venv
PY := $(VENV)/bin/python
PEER_PY := $(PEER_VENV)/bin/python

.PHONY: setup peer-setup demo test test-core test-peer lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[test,deploy]"
	touch $@

setup: $(VENV)/.installed

# torchvision and timm only work with a newer torch than the core's, so they live in their own environment.
$(PEER_VENV)/.installed:
	$(PYTHON) -m venv $(PEER_VENV)
	$(PEER_PY) -m pip install -q "torch==2.15.*" "torchvision==0.29.2" timm numpy pillow tqdm safetensors pytest hypothesis \
		onnx onnxruntime onnxscript
	touch $@

peer-setup: $(PEER_VENV)/.installed

demo: setup
	$(VENV)/bin/mnv3 models
	$(VENV)/bin/mnv3 profile mobilenet_v3_small --resolution 224

lint: setup
	$(VENV)/bin/ruff check .

test-core: setup
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

test-peer: peer-setup
	PYTHONPATH=src $(PEER_PY) -m pytest -q -m peer

test: test-core test-peer

clean:
	rm -rf $(VENV) $(PEER_VENV) .pytest_cache .ruff_cache
