# Two entry points: `make demo` (the offline demo) and `make test` (lint + tests). Each builds .venv first:
# the CPU torch wheel when no torch is installed, then this package with its test extras.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
# LPIPS and DreamSim need torchvision, which does not import beside the CPU torch 2.13 wheel: their tests run in a
# second venv on the torch/torchvision pair that does (see the README's evaluation section). That venv also carries
# the oldest transformers relsim supports (the GPU machine's), and the model tests run there too: .venv has the
# newest, so the vision fast path's guard and the remote code are tested at both ends of the supported range.
TORCHVISION_VENV ?= .venv-torchvision
TORCHVISION_TORCH ?= torch==2.14.1 torchvision==0.29.1
OLDEST_TRANSFORMERS ?= transformers==5.17.*
TORCHVISION_PINS := $(TORCHVISION_TORCH) $(OLDEST_TRANSFORMERS)
MODEL_TESTS := tests/test_modeling.py tests/test_fast_path_compat.py tests/test_vision_attention.py \
	tests/test_vision_layout.py tests/test_processing.py tests/test_remote_code.py tests/test_from_backbone.py \
	tests/test_peft.py tests/test_convert_official.py tests/test_pairwise.py tests/test_sentence_transformers.py
DEMO_OUTPUT ?= relsim-demo
# The web-app tests drive Debian's chromium through Playwright (Playwright's own browser download is not reachable
# from these machines); CI runs as root on Debian, so `make test` installs it with apt when it is missing.
CHROMIUM ?= /usr/bin/chromium

.PHONY: demo test lint install install-torchvision chromium clean

# Not phony: FORCE makes the pins' rule run every time, yet the file (and so its mtime) changes only with the pins.
FORCE:

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

# The pins the second venv was built with: a changed pin rewrites this file, which reinstalls the venv.
$(TORCHVISION_VENV)/.pins: FORCE
	@mkdir -p $(@D)
	@echo '$(TORCHVISION_PINS)' | cmp -s - $@ || echo '$(TORCHVISION_PINS)' > $@

$(TORCHVISION_VENV)/.installed: setup.cfg pyproject.toml $(TORCHVISION_VENV)/.pins
	test -x $(TORCHVISION_VENV)/bin/python || $(PYTHON) -m venv $(TORCHVISION_VENV)
	$(TORCHVISION_VENV)/bin/python -m pip install --quiet $(TORCHVISION_TORCH)
	$(TORCHVISION_VENV)/bin/python -m pip install --quiet -e ".[test,perceptual]" $(TORCHVISION_TORCH) \
		"$(OLDEST_TRANSFORMERS)"
	touch $@

install-torchvision: $(TORCHVISION_VENV)/.installed

$(CHROMIUM):
	@test "$$(id -u)" = 0 || { echo "$@ is missing: install Debian's chromium as root (apt-get install chromium)" \
		"or point CHROMIUM at a Chromium binary"; exit 1; }
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
	test -x $@

chromium: $(CHROMIUM)

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m training.demo --output $(DEMO_OUTPUT)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint install-torchvision chromium
	HF_HUB_OFFLINE=1 RELSIM_CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest -m "not torchvision"
	HF_HUB_OFFLINE=1 $(TORCHVISION_VENV)/bin/python -m pytest -m torchvision
	HF_HUB_OFFLINE=1 $(TORCHVISION_VENV)/bin/python -m pytest -m "not torchvision" $(MODEL_TESTS)

clean:
	rm -rf $(VENV) $(TORCHVISION_VENV) $(DEMO_OUTPUT) .pytest_cache .ruff_cache *.egg-info
