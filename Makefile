# jetpool developer entry points. Everything bootstraps itself: a Python venv (.venv), the
# local Kubernetes test bed built from pinned Go modules (cached under ~/.cache/jetpool), and
# the services each test needs (nats-server, the local cluster).
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
PYTEST_ARGS ?=
KIND_PYTEST_ARGS ?=

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@echo "[make] bootstrapping $(VENV)"
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q -U pip
	@$(BIN)/python -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP) ## create/refresh the virtualenv with jetpool and its dev tools

testbed: ## build the pinned kube-apiserver/etcd/KCM/scheduler/kwok/helm, promtool, prometheus and jaeger (cached)
	@e2e/build-testbed.sh >/dev/null
	@for tool in promtool prometheus jaeger; do e2e/build-observability.sh $$tool >/dev/null; done

cluster-up: venv ## start the local cluster; kubeconfig in .jetpool/kubeconfig
	@e2e/cluster.sh up

cluster-down: ## stop the local cluster, leaving no process behind
	@e2e/cluster.sh down

crds: venv ## regenerate crds/ from the pydantic API models
	@$(BIN)/python -m jetpool_operator.api.crdgen

lint: venv ## ruff + mypy
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .
	@$(BIN)/mypy
	@$(BIN)/python -m jetpool_operator.api.crdgen --check

test: test-local e2e-kind ## everything: lint, unit, real nats-server, local cluster e2e, kind e2e

test-local: venv testbed lint ## lint, unit, real nats-server, real local cluster, e2e (no Docker)
	@$(BIN)/pytest $(PYTEST_ARGS)

demo: venv testbed ## the local demo: cluster, NATS, operator, workers, a pool, a burst of tasks
	@$(BIN)/python -m e2e.demo

demo-down: ## stop everything the demo started
	@$(BIN)/python -m e2e.demo --down

e2e-kind: venv ## the e2e suite on kind: images, chart, real worker containers, secured NATS
	@e2e/kind/run.sh $(KIND_PYTEST_ARGS)

manifests: venv testbed ## regenerate manifests/base from the Helm chart
	@$(BIN)/python manifests/generate.py

BENCH_STAMP := $(VENV)/.bench-$(shell sha1sum pyproject.toml | cut -c1-12)
BENCH_ARGS ?=

$(BENCH_STAMP): $(STAMP)
	@$(BIN)/python -m pip install -q -e '.[dev,bench]'
	@rm -f $(VENV)/.bench-* && touch $@

# The suite's list is bench/run_all.py's BENCHMARKS; BENCH_ARGS e.g. "--skip scaling", "--quick".
bench: $(BENCH_STAMP) ## run the benchmarks (ratios against in-run baselines) -> bench/out/report.md
	@$(BIN)/python bench/run_all.py $(BENCH_ARGS)

.PHONY: help venv testbed cluster-up cluster-down crds lint test test-local demo demo-down e2e-kind manifests bench
