# Two entry points, both working from a clean clone on a fresh machine:
#   make demo   set up .venv, install Fashion-MNIST if missing, and run the main job: MobileNetV3-Small trained on
#               Fashion-MNIST into runs/fmnist-small (resumed if a checkpoint is there), then evaluated
#   make test   set up .venv (and .peer-venv for the peer tests) and run every test CI runs
PYTHON ?= python3
VENV := .venv
PEER_VENV := .peer-venv
PY := $(VENV)/bin/python
PEER_PY := $(PEER_VENV)/bin/python

RUN ?= runs/fmnist-small

.PHONY: setup peer-setup data demo test test-core test-peer lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[test,deploy,openvino,search,coco]"
	touch $@

setup: $(VENV)/.installed

# torchvision and timm only work with a newer torch than the core's, so they live in their own environment.
$(PEER_VENV)/.installed:
	$(PYTHON) -m venv $(PEER_VENV)
	$(PEER_PY) -m pip install -q "torch==2.15.*" "torchvision==0.29.2" timm numpy pillow tqdm safetensors pytest hypothesis \
		onnx onnxruntime onnxscript
	touch $@

peer-setup: $(PEER_VENV)/.installed

# Debian's package puts the IDX files in /usr/share/datasets/fashion-mnist (the loader also reads $$MNV3_DATA).
data:
	@if [ -z "$$MNV3_DATA" ] && [ ! -d /usr/share/datasets/fashion-mnist ]; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
		else echo "Fashion-MNIST not found: run 'sudo apt-get install dataset-fashion-mnist' or set MNV3_DATA" >&2; \
		exit 1; fi; fi

demo: setup data
	$(VENV)/bin/mnv3 train --model mobilenet_v3_small --data fashion-mnist --out $(RUN) \
		$$(if [ -f $(RUN)/checkpoint.json ]; then echo --resume; fi)
	$(VENV)/bin/mnv3 eval $(RUN)

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
