# p2pstore developer entry points. Every target creates or reuses .venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# Parallel test workers; 2 cores on the project's machines.
WORKERS ?= 2

.PHONY: all install test lint typecheck pytest test-slow run bench clean

all: test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -n $(WORKERS) -m "not slow"

## The test command (README, .ci/run): lint, type checks, then the test suite.
test: lint typecheck pytest

test-slow: $(STAMP)
	$(BIN)/pytest -m slow

## The main job: a working local grid plus the shell.
run: $(STAMP)
	$(BIN)/python -m p2pstore.demo

## Speed and memory measurements, printed as JSON lines.
bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
