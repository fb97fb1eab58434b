# Two entry points for a fresh machine: `make demo` and `make test`. Both create .venv and
# install what they need. Where no NVIDIA GPU is present, the CPU build of torch is installed
# first so pip does not pull the multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
# Elsewhere, point pip at PyTorch's CPU wheel index, e.g. TORCH_PIP_ARGS="--index-url <cpu index>".
TORCH_PIP_ARGS ?=
DEMO_OUT ?= demo

.PHONY: install demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install: $(BIN)/python
	@if command -v nvidia-smi >/dev/null 2>&1; then \
		$(BIN)/pip install -q "torch>=2.6"; \
	else \
		$(BIN)/pip install -q "torch==$(TORCH_VERSION)" $(TORCH_PIP_ARGS); \
	fi
	$(BIN)/pip install -q -e ".[dev]"
	@# Test-only reference implementation of SpidR/DinoSR (its metadata asks for Python >= 3.12
	@# and pins heavy extras it does not need to import its models).
	$(BIN)/pip install -q --no-deps --ignore-requires-python "spidr==0.2.0"

demo: install
	$(BIN)/hubertlab demo $(DEMO_OUT)

test: install
	$(BIN)/ruff check src tests benchmarks experiments
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check src tests benchmarks experiments
	$(BIN)/ruff format --check src tests benchmarks experiments

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
