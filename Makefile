# The two commands a newcomer needs: `make run` and `make test`. Everything else is a step of those.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
TOOLS := .tools
UV_VERSION := 0.13.9
SAM_VERSION := 1.170.0
UV := $(TOOLS)/uv/bin/uv
VENV := .venv
PY := $(VENV)/bin/python
SAM := $(TOOLS)/bin/sam
SAM_STAMP := $(TOOLS)/sam-$(SAM_VERSION).installed
# checkov pins many packages of its own, so like SAM CLI it lives in a separate tool environment.
CHECKOV_VERSION := 3.3.30
CHECKOV_STAMP := $(TOOLS)/checkov-$(CHECKOV_VERSION).installed

# Never talk to AWS from here: SAM CLI telemetry off, fake credentials for anything local.
export SAM_CLI_TELEMETRY := 0
export UV_TOOL_DIR := $(CURDIR)/$(TOOLS)/uv-tools
export UV_TOOL_BIN_DIR := $(CURDIR)/$(TOOLS)/bin

.PHONY: help setup setup-run run test test-fast test-py313 lint typecheck pytest template-check checkov sam-build workflow-lint load simulate bench cost-doc build deploy clean

help:
	@echo "make run    start the local stack with demo data (http://127.0.0.1:3000)"
	@echo "make test   lint, type-check, every test, template checks and sam build"
	@echo "make bench  benchmarks, printed as ratios against a floor measured in the same run"
	@echo "make cost-doc  measure what a check costs and render docs/cost.md from it"
	@echo "make simulate  rollout plans on a simulated 2,000-device fleet (several minutes)"
	@echo "make load   bounded load test of the local stack (a few thousand device-shaped requests)"
	@echo "make test-fast  lint, type-check and the unit tests only (about a minute)"
	@echo "make test-py313 the unit tests on Python 3.13, the Lambda runtime's (part of make test)"
	@echo "make build  sam build with the pinned SAM CLI and the runtime's Python"
	@echo "make deploy sam deploy (first time: make deploy ARGS=--guided)"

$(UV):
	$(PYTHON) -m venv $(TOOLS)/uv
	$(TOOLS)/uv/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# One .venv, two installs of the locked versions (uv.lock), each with its own stamp:
# - `make run` needs only the project, its runtime dependencies and the `local` extra. `--inexact` leaves
#   anything else alone, so after `make test` it changes nothing (the dev tools stay).
# - everything else (`make test`, lint, bench, ...) syncs exactly: the dev group and the `local` extra,
#   which also completes a .venv that `make run` made.
# Either order works: `make run` then `make test` adds the dev tools; `make test` then `make run` is a
# no-op sync. A change to pyproject.toml or uv.lock makes both stamps stale.
# --python only when creating .venv: uv recreates an existing one whose interpreter is not that very
# path (a pyenv shim never is), which would undo the other install.
VENV_PYTHON = $(if $(wildcard $(VENV)/pyvenv.cfg),,--python $(PYTHON))
$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --extra local $(VENV_PYTHON)
	@touch $@

$(VENV)/.synced-run: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --inexact --no-default-groups --extra local $(VENV_PYTHON)
	@touch $@

setup: $(VENV)/.synced

setup-run: $(VENV)/.synced-run

$(SAM_STAMP): | $(UV)
	$(UV) tool install --force --quiet --python $(PYTHON) aws-sam-cli==$(SAM_VERSION)
	@touch $@

$(CHECKOV_STAMP): | $(UV)
	$(UV) tool install --force --quiet --python $(PYTHON) checkov==$(CHECKOV_VERSION)
	@touch $@

run: setup-run
	$(VENV)/bin/otafleet-local $(ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: setup
	$(VENV)/bin/mypy functions cli local tests scripts $(wildcard bench/*.py)

# The template security tests run checkov too (front door on and off), so it is installed first.
# One worker per core (pytest-xdist); PYTEST_ARGS="-p no:xdist" runs it in one process.
PYTEST_WORKERS ?= auto
pytest: setup $(CHECKOV_STAMP)
	OTAFLEET_REQUIRE_TOOLS=1 $(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

template-check: setup $(SAM_STAMP)
	$(PY) scripts/template_check.py --sam $(SAM)

sam-build: setup $(SAM_STAMP)
	bash scripts/sam_build_smoke.sh $(SAM)

checkov: template-check $(CHECKOV_STAMP)
	$(PY) scripts/checkov_check.py --checkov $(CURDIR)/$(TOOLS)/bin/checkov

# The rollout-plan scenarios at full size (2,000 devices; FLEET=N to change it): several minutes.
simulate: setup
	bash scripts/simulate.sh

load: setup
	OTAFLEET_LOAD=1 $(PY) -m pytest tests/hardening/test_load.py -q

workflow-lint: setup
	bash scripts/lint_workflows.sh

# The tests on the Lambda runtime's Python (3.13) in .venv-3.13, skipped with a message when no python3.13
# can be found (scripts/test_runtime_python.sh). By default the unit tests of the code, about 10 s: not
# those that check template.yaml, the workflows and the sample-image builder with external tools, which
# behave the same on either interpreter and take ~2 minutes. Everything: make test-py313 PY313_ARGS=tests
PY313_TOOL_TESTS := test_template test_front_door test_workflows test_sample_images test_env_vars \
	test_local_template test_local_schedules
PY313_ARGS ?= tests/unit -q $(foreach t,$(PY313_TOOL_TESTS),--ignore=tests/unit/$(t).py)
test-py313: | $(UV)
	UV=$(UV) bash scripts/test_runtime_python.sh $(PY313_ARGS)

test: lint typecheck pytest template-check checkov sam-build workflow-lint test-py313
	@echo "make test: all checks passed"

test-fast: lint typecheck
	$(PY) -m pytest tests/unit -q $(PYTEST_ARGS)

build: setup $(SAM_STAMP)
	bash scripts/sam.sh build

deploy: build
	bash scripts/sam.sh deploy $(ARGS)

bench: setup
	$(PY) -m bench

# docs/cost.md is rendered from a measurement, never edited by hand.
cost-doc: setup
	$(PY) -m bench cost --write-doc

clean:
	rm -rf $(VENV) $(VENV)-3.13 $(TOOLS) .aws-sam build .pytest_cache .mypy_cache .ruff_cache
