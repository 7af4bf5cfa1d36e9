# fleet.azure_iot: `make demo` runs the main job on the local emulator, `make test` runs every check.
SHELL := /bin/bash
PYTHON ?= $(shell scripts/find-python)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Tests run on every core (pytest-xdist); each worker has its own emulator and Azurite.
PYTEST_WORKERS ?= auto

.PHONY: all venv test lint sanity docs compat test-unit test-emulator test-integration demo bench chaos clean

all: test

$(STAMP): requirements.txt requirements-dev.txt emulator/pyproject.toml scripts/azurite scripts/thirdparty-collections scripts/edge-host-deps
	@test -n "$(PYTHON)" || { echo "No Python >= 3.11 found" >&2; exit 1; }
	@echo "Creating $(VENV) with $(PYTHON)"
	@rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	$(BIN)/python scripts/azurite --install-only
	$(BIN)/python scripts/thirdparty-collections >/dev/null
	scripts/edge-host-deps
	@touch $(STAMP)

venv: $(STAMP)

test: venv
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS) tests
	BIN=$(BIN) scripts/lint.sh
	BIN=$(BIN) scripts/sanity.sh

sanity: venv
	BIN=$(BIN) scripts/sanity.sh

lint: venv
	BIN=$(BIN) scripts/lint.sh

test-unit: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS) tests/unit

test-emulator: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS) tests/emulator

test-integration: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS) tests/integration

demo: venv
	$(BIN)/python scripts/demo.py

docs: venv
	scripts/docs.sh

compat:
	scripts/compat.sh

bench: venv
	$(BIN)/python scripts/bench.py

# The model-based test with many more random sequences than make test runs, from a new seed each time (CHAOS_SEED,
# CHAOS_EXAMPLES, CHAOS_STEPS); a failure prints its seed.
chaos: venv
	CHAOS_SEED=$${CHAOS_SEED:-random} CHAOS_EXAMPLES=$${CHAOS_EXAMPLES:-1000} CHAOS_STEPS=$${CHAOS_STEPS:-30} $(BIN)/python -m pytest -p no:xdist $(PYTEST_ARGS) tests/integration/test_model_based.py

clean:
	rm -rf $(VENV) .venv-docs .pytest_cache .hypothesis .demo .bench tests/output build
