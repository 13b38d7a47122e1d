# Two entry points: `make demo` (the offline demo) and `make test` (lint, the docs build, tests). Each builds .venv
# first: the CPU torch wheel when no torch is installed, then this package with its test extras, at the exact
# versions of the lock file (constraints/test.txt), so a new upstream release cannot change a test run by itself.
# `make test-latest` runs the suite against the newest releases setup.cfg allows; `make lock` then records them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
LOCK ?= constraints/test.txt
LOCK_TORCHVISION ?= constraints/test-torchvision.txt
LATEST_VENV ?= .venv-latest
# LPIPS and DreamSim need torchvision, which does not import beside the CPU torch 2.13 wheel: their tests run in a
# second venv on the torch/torchvision pair that does (see docs/evaluation.md). That venv also carries
# the oldest transformers relsim supports (the GPU machine's), and the model tests run there too: .venv has the
# newest, so the vision fast path's guard and the remote code are tested at both ends of the supported range.
TORCHVISION_VENV ?= .venv-torchvision
# Its lock file pins torch==2.14.1, torchvision==0.29.1 and transformers==5.17.0.
MODEL_TESTS := tests/test_modeling.py tests/test_fast_path_compat.py tests/test_vision_attention.py \
	tests/test_vision_layout.py tests/test_processing.py tests/test_remote_code.py tests/test_from_backbone.py \
	tests/test_peft.py tests/test_convert_official.py tests/test_pairwise.py tests/test_sentence_transformers.py \
	tests/test_image_backends.py tests/test_trainer_hooks.py
DEMO_OUTPUT ?= relsim-demo
# The web-app tests drive Debian's chromium through Playwright (Playwright's own browser download is not reachable
# from these machines); CI runs as root on Debian, so `make test` installs it with apt when it is missing.
CHROMIUM ?= /usr/bin/chromium

.PHONY: demo docs test test-latest lock lint install install-torchvision chromium clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: setup.cfg pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e ".[test]"
	touch $@

install: $(VENV)/.installed

$(TORCHVISION_VENV)/.installed: setup.cfg pyproject.toml $(LOCK_TORCHVISION)
	test -x $(TORCHVISION_VENV)/bin/python || $(PYTHON) -m venv $(TORCHVISION_VENV)
	$(TORCHVISION_VENV)/bin/python -m pip install --quiet -c $(LOCK_TORCHVISION) torch torchvision
	$(TORCHVISION_VENV)/bin/python -m pip install --quiet -c $(LOCK_TORCHVISION) -e ".[test,perceptual]"
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

# The documentation site (docs/, mkdocs.yml) into site/: --strict turns a broken link, a page left out of the nav or an
# unresolved API reference into a failure. The API pages read docstrings by static analysis (nothing is imported).
# NO_MKDOCS_2_WARNING silences mkdocs-material's banner about its successor, printed on every build.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint docs install-torchvision chromium
	HF_HUB_OFFLINE=1 RELSIM_CHROMIUM=$(CHROMIUM) RELSIM_LOCK=$(LOCK) $(BIN)/python -m pytest -m "not torchvision"
	HF_HUB_OFFLINE=1 $(TORCHVISION_VENV)/bin/python -m pytest -m torchvision
	HF_HUB_OFFLINE=1 $(TORCHVISION_VENV)/bin/python -m pytest -m "not torchvision" $(MODEL_TESTS)

# The newest releases setup.cfg allows, in a venv of their own (no lock file): what `pip install relsim-hf` gives a
# user today. Run it before raising the lock; the torchvision venv stays on the oldest supported transformers.
test-latest: chromium
	rm -rf $(LATEST_VENV)
	$(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/python -m pip install --quiet torch==$(TORCH_VERSION)
	$(LATEST_VENV)/bin/python -m pip install --quiet --upgrade -e ".[test]"
	$(LATEST_VENV)/bin/pip freeze --exclude-editable | grep -E '^(transformers|peft|trl|datasets|ray|gradio)=='
	HF_HUB_OFFLINE=1 RELSIM_CHROMIUM=$(CHROMIUM) $(LATEST_VENV)/bin/python -m pytest -m "not torchvision and not lock"

# After `make test-latest` passed: its exact versions become the lock file that `make test` and CI install.
lock:
	test -x $(LATEST_VENV)/bin/python || { echo "run make test-latest first"; exit 1; }
	{ head -n 1 $(LOCK); $(LATEST_VENV)/bin/pip freeze --exclude-editable | grep -v '^#' \
		| sed -E 's/^torch==([0-9.]+)\+cpu$$/torch==\1/' | LC_ALL=C sort -f; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)

clean:
	rm -rf $(VENV) $(TORCHVISION_VENV) $(LATEST_VENV) $(DEMO_OUTPUT) site .pytest_cache .ruff_cache *.egg-info
