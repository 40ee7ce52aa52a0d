# The two commands of the README: `make demo` and `make test`. Both bootstrap everything
# from this repository's own files: a pinned uv in .tools/, then the locked workspace in .venv/.
PYTHON ?= python3
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin
PYTESTS := hookspecs/tests coordinator_core/tests plugins/engine-wasmtime/tests \
	plugins/engine-onnxruntime/tests plugins/metrics-prometheus/tests plugins/server/tests \
	plugins/executor-ray/tests tests

.PHONY: setup demo test lint typecheck pytest bench clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==0.13.9

$(VENV)/.synced: $(UV) uv.lock pyproject.toml hookspecs/pyproject.toml \
		coordinator_core/pyproject.toml $(wildcard plugins/*/pyproject.toml)
	UV_PYTHON=$(PYTHON) $(UV) sync --all-packages --frozen --quiet
	touch $@

setup: $(VENV)/.synced

demo: setup
	$(BIN)/coordinator demo

test: lint typecheck pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/python scripts/gen_hooks_doc.py --check
	$(BIN)/python scripts/gen_grpc.py --check

typecheck: setup
	$(BIN)/mypy hookspecs/src coordinator_core/src $(wildcard plugins/*/src)

pytest: setup
	$(BIN)/python -m pytest $(wildcard $(PYTESTS)) -q -p no:cacheprovider

bench: setup
	$(BIN)/python bench/run.py

clean:
	rm -rf $(TOOLS) $(VENV) .mypy_cache .ruff_cache
