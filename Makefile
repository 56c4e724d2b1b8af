# The two commands a new machine needs: `make up` and `make test`.
SHELL := /bin/bash
export UV_PYTHON_DOWNLOADS := never

# Use a working `uv` if there is one; otherwise bootstrap a private copy with pip.
UV := $(shell uv --version >/dev/null 2>&1 && echo uv || echo $(CURDIR)/.tools/bin/uv)
UV_DEP := $(if $(filter uv,$(UV)),,$(UV))

.PHONY: install up test lint format client

$(CURDIR)/.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv

install: $(UV_DEP)
	$(UV) sync --frozen --compile-bytecode

up: install
	$(UV) run --frozen stockcopilot up

test: install
	$(UV) run --frozen pytest

lint: install
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen lint-imports

format: install
	$(UV) run --frozen ruff check --fix .
	$(UV) run --frozen ruff format .

client: install
	$(UV) run --frozen python -m pipelines.client_gen
