# kubetune: `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export KUBECONFIG := $(CURDIR)/.cluster/kubeconfig

PY_SOURCES := contract worker operator localcluster tests examples bench hack
.DEFAULT_GOAL := help

help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

venv: $(VENV)/.installed ## Create .venv with kubetune and the test tools

examples-deps: venv ## Install the examples' extra (PyTorch, about 5 GB with its CUDA libraries)
	$(PY) -m pip install --quiet -e '.[examples]'

example: venv ## Run the example trainable locally to its stop criterion
	$(VENV)/bin/kubetune run examples.ray_class_trainable:MyTrainable --stop training_iteration=20 --checkpoint-frequency 5 --storage ./kubetune_results/example

demo: venv ## The main job: build and start the local cluster, then run a TrainableJob on it
	bash hack/demo.sh

lint: venv ## ruff, mypy and the import contracts (lint-imports; pyproject's [tool.importlinter])
	$(VENV)/bin/ruff check $(PY_SOURCES)
	$(VENV)/bin/ruff format --check $(PY_SOURCES)
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache --no-logo

unit: venv ## Fast unit tests (no cluster)
	$(VENV)/bin/pytest -q -n 2 tests/unit

# The parallel phase's pytest-xdist workers (hack/e2e.sh).
E2E_WORKERS ?= 3
export E2E_WORKERS

e2e: venv cluster-up ## End-to-end tests on the real local cluster: a parallel phase, and beside it the serial one on a second cluster (hack/e2e.sh)
	bash hack/e2e.sh

test: ## Everything CI runs: lint, unit tests, the cluster and the end-to-end tests, the image and its tests (hack/test.sh)
	bash hack/test.sh

# The job lifecycle on the cluster: create, run, suspend, resume, fail, restore, delete.
QUICK_E2E := tests/e2e/test_operator_lifecycle.py tests/e2e/test_operator_failures.py
test-quick: venv lint cluster-up ## Before a commit (about 5 min warm): lint, unit tests, the job lifecycle end to end
	$(VENV)/bin/pytest -q -n 2 tests/unit
	$(VENV)/bin/pytest -q --durations=10 -n $(E2E_WORKERS) $(QUICK_E2E)

image: ## Build the Dockerfile with buildah, its Debian base made here (root; cached in ~/.cache/kubetune)
	bash hack/image.sh build

image-test: venv image ## Run the built image: its commands, its user, the example trainable to a checkpoint
	$(VENV)/bin/pytest -q tests/image

cluster-build: ## Build the control plane, etcd and the S3 server (cached per version)
	bash localcluster/build.sh all

cluster-up: venv ## Start the local cluster (builds what is missing); idempotent
	$(PY) -m localcluster up

cluster-down: ## Stop the local cluster (and the e2e serial phase's, if left up) and remove its state
	@if [ -x $(PY) ]; then $(PY) -m localcluster down; else echo "no .venv: nothing to stop"; fi
	@if [ -x $(PY) ] && [ -d .cluster-serial ]; then KUBETUNE_STATE_DIR=$(CURDIR)/.cluster-serial KUBETUNE_PORT_OFFSET=2000 $(PY) -m localcluster down; fi

kueue-up: venv cluster-up ## Start the real Kueue (v0.17.0) on the local cluster (builds it once, ~4 min); idempotent
	$(PY) -m localcluster kueue up

kueue-down: ## Stop Kueue on the local cluster (its CRDs and queues stay)
	@if [ -x $(PY) ]; then $(PY) -m localcluster kueue down; else echo "no .venv: nothing to stop"; fi

generate: venv ## Regenerate the chart's CRD copy and docs/api.md from crds/
	$(PY) hack/sync_crds.py
	$(PY) hack/gen_api_docs.py

bench: venv ## Loop overhead beside Ray (installs the bench extra)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) bench/loop_overhead.py

# e.g. make bench-scale BENCH_JOBS=300,1000 BENCH_OPERATOR=baseline BENCH_SCALE_ARGS='--hold 120'
BENCH_JOBS ?= 1000,10000
BENCH_OPERATOR ?= current
bench-scale: venv cluster-up ## Operator at scale on kwok nodes (BENCH_JOBS=1000,10000 BENCH_OPERATOR=current|baseline)
	$(PY) bench/scale.py --jobs $(BENCH_JOBS) --operator $(BENCH_OPERATOR) $(BENCH_SCALE_ARGS)

.PHONY: help venv examples-deps example demo lint unit e2e test test-quick image image-test cluster-build cluster-up cluster-down kueue-up kueue-down generate bench bench-scale
