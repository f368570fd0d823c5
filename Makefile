# The CodeTask operator. `make demo` and `make test` are the two set-up commands (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
KUBECONFIG_LOCAL := $(CURDIR)/.cluster/kubeconfig
export RUNNER_IMAGE ?= codetask-runner:dev
export OPERATOR_IMAGE ?= codetask-operator:dev
# Nodes of the cluster `make cluster` brings up: 1 or 2. Local back end: node 2 is
# hack/cluster/node2.sh, a second node in a network namespace (NODE2.md), tainted
# codetask.dev/second-node=true:NoSchedule so that only pods that tolerate it go there: the tests
# written for one node (and the chaos suite's restarts of node 1's kubelet and containerd) keep
# their pods on node 1, and the two-node tests place theirs on purpose. It adds about 20 s to
# `make cluster` (images copied from node 1). NODES=1 for one node.
export NODES ?= 2

.PHONY: help venv cluster cluster-down images crds lint unit test chaos bench demo clean

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is needed (kopf 1.45)"'
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed ## Python environment with the operator and the dev tools

cluster: ## Bring up a cluster (local from Debian packages, kind, or $KUBECONFIG) → .cluster/kubeconfig; NODES=2 for two nodes
	hack/cluster/cluster.sh up

cluster-down: ## Stop what `make cluster` started (node 2 too)
	hack/cluster/cluster.sh down

images: cluster ## Build the runner and operator images and load them into the cluster
	hack/cluster/cluster.sh images

crds: venv ## Regenerate crds/, the chart's copy and docs/reference.md from the pydantic models
	$(PY) -m codetask_operator.crd --write crds/
	cp crds/*.yaml charts/codetask-operator/crds/
	$(PY) -m codetask_operator.reference > docs/reference.md

lint: venv ## ruff and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

unit: venv ## Unit tests only (no cluster)
	$(VENV)/bin/pytest -m unit

test: venv images ## Everything: lint, unit, integration and e2e tests on a real cluster
	$(MAKE) lint
	$(VENV)/bin/pytest -m 'not long' --durations=15

chaos: venv images ## The long fault runs: 200 tasks with 10 operator kills (seed printed; CHAOS_SEED to replay), node, containerd, API server, load
	CHAOS_TASKS=$${CHAOS_TASKS:-200} CHAOS_KILLS=$${CHAOS_KILLS:-10} $(VENV)/bin/pytest -s --durations=20 tests/chaos

bench: venv images ## Benchmarks (bench/results/*.json)
	$(PY) -m bench

demo: venv images ## Cluster, images, operator, a sample task and its result
	hack/demo.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
