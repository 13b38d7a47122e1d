# Two entry points: `make demo` (the offline demo) and `make test` (lint + tests). Each builds .venv first:
# the CPU torch wheel when no torch is installed, then this package with its test extras.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
# LPIPS and DreamSim need torchvision, which does not import beside the CPU torch 2.13 wheel: their tests run in a
# second venv on the torch/torchvision pair that does (see the README's evaluation section).
TORCHVISION_VENV ?= .venv-torchvision
TORCHVISION_TORCH ?= torch==2.14.1 torchvision==0.29.1
DEMO_OUTPUT ?= relsim-demo

.PHONY: demo test lint install install-torchvision clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

$(TORCHVISION_VENV)/.installed: setup.cfg pyproject.toml
	test -x $(TORCHVISION_VENV)/bin/python || $(PYTHON) -m venv $(TORCHVISION_VENV)
	$(TORCHVISION_VENV)/bin/python -c "import torchvision" 2>/dev/null || \
		$(TORCHVISION_VENV)/bin/python -m pip install --quiet $(TORCHVISION_TORCH)
	$(TORCHVISION_VENV)/bin/python -m pip install --quiet -e ".[test,perceptual]"
	touch $@

install-torchvision: $(TORCHVISION_VENV)/.installed

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m training.demo --output $(DEMO_OUTPUT)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint install-torchvision
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "not torchvision"
	HF_HUB_OFFLINE=1 $(TORCHVISION_VENV)/bin/python -m pytest -m torchvision

clean:
	rm -rf $(VENV) $(TORCHVISION_VENV) $(DEMO_OUTPUT) .pytest_cache .ruff_cache *.egg-info
