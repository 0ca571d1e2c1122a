# Switchboard — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PACKAGES := libs/contracts libs/servicekit libs/fakellm libs/devstack libs/cli \
            services/catalog services/billing services/runner services/gateway
PYTEST_ARGS ?=

.PHONY: help install run test test-unit test-integration test-e2e lint typecheck bench bench-compare contracts helm-lint clean

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

$(VENV)/.installed: constraints.txt pyproject.toml $(foreach p,$(PACKAGES),$(p)/pyproject.toml)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade "pip==$$(grep -E '^pip==' constraints.txt | cut -d= -f3)"
	$(PIP) install -q -c constraints.txt $(foreach p,$(PACKAGES),-e $(p)) --group dev
	@touch $@

install: $(VENV)/.installed ## Create .venv and install every package (pinned by constraints.txt)

run: install ## Start the whole stack on embedded defaults (NATS, PostgreSQL, fake LLM) and print examples
	$(PY) -m devstack run

test: install ## Run the whole suite (unit, integration, e2e) against real NATS, PostgreSQL and Redis
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: install ## Unit tests only (no network)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration: install ## Integration tests (real NATS, PostgreSQL, Redis)
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

test-e2e: install ## End-to-end tests (the stack as processes, the openai SDK as client)
	$(PY) -m pytest tests/e2e $(PYTEST_ARGS)

lint: install ## ruff check and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install ## mypy over every package
	$(VENV)/bin/mypy $(foreach p,$(PACKAGES),$(p)/src)

bench: install ## Benchmarks: added latency and throughput next to the fake LLM called directly
	$(PY) -m bench

bench-compare: install ## Switchboard next to LiteLLM's proxy in one run (LITELLM=its litellm command; see bench/compare.py)
	@test -n "$(LITELLM)" || { echo "set LITELLM to the litellm command of its own installation (see bench/compare.py)"; exit 2; }
	$(PY) -m bench.compare --litellm $(LITELLM)

contracts: install ## Regenerate the committed contract schemas and the AsyncAPI document (libs/contracts/asyncapi.json)
	$(PY) -m contracts.snapshot --write

helm-lint: install ## Lint and render the Helm chart (helm if on PATH, else Helm's library from the dev deps)
	@if command -v helm >/dev/null; then \
	  helm lint --strict deploy/helm/switchboard -f deploy/helm/switchboard/ci/existing-secrets-values.yaml; \
	else \
	  $(PY) deploy/helm/chart.py lint -f deploy/helm/switchboard/ci/existing-secrets-values.yaml; \
	fi

clean: ## Remove the virtual environment, caches and local run state
	rm -rf $(VENV) .run .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
