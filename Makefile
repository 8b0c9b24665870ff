# Entry points for operators and CI. `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# Molecule and ansible-lint call ansible-config, ansible-playbook, ... by name.
export PATH := $(abspath $(BIN)):$(PATH)
PYTHON ?= python3
SCENARIOS ?=
LAB_INVENTORY ?= inventory/lab
export LAB_INVENTORY
export VENV
# Each part of `make test` prints how long it took, so a slow CI run says where the time went.
TIMED := scripts/timed.sh
export TIMED_RECORD ?= $(CURDIR)/.cache/timings.txt

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-z][a-z_-]+:.*## ' $(MAKEFILE_LIST) | sort | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements-dev.txt app/requirements.lock app/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt -r app/requirements.lock
	$(BIN)/pip install -q --no-deps -e 'app[test]'
	$(BIN)/pip install -q -r app/requirements-test.lock
	touch $@

.PHONY: venv
venv: $(VENV)/.installed ## Install the pinned tooling into .venv

.PHONY: engine
engine: ## Install and start Docker Engine when none answers
	bash scripts/ensure-docker.sh

.PHONY: tools
tools: ## Install host tools the tests use (promtool, debootstrap)
	bash scripts/host-tools.sh

.PHONY: lint
lint: venv ## ansible-lint (production profile), yamllint, ruff
	$(BIN)/yamllint --strict .
	$(BIN)/ansible-lint --offline -q
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

.PHONY: unit
unit: venv ## Unit tests: the API and the repo's own plugins
	$(BIN)/pytest -q app/tests tests/unit tests/monitoring

.PHONY: image
image: venv engine ## Build apptive-api:<version> and dist/apptive-api-<version>.tar (VERSION=x overrides)
	bash scripts/build-image.sh

.PHONY: image-test
image-test: venv engine ## The built image on loopback: health, round trip, sentinel guard, two owners
	$(BIN)/pytest -q tests/image tests/store_safety

.PHONY: molecule
molecule: venv engine ## Every role's Molecule scenario, 3 at a time (SCENARIOS="a b" for some)
	bash scripts/lab-image.sh
	bash scripts/molecule-all.sh $(SCENARIOS)

.PHONY: lab
lab: venv engine image ## Bring up the lab (containers as hosts) and run site.yml on it
	bash scripts/lab.sh up

.PHONY: lab-down
lab-down: ## Remove every container, volume and network of the lab
	bash scripts/lab.sh down

.PHONY: lab-info
lab-info: ## Where to reach the lab
	bash scripts/lab.sh info

.PHONY: lab-idempotence
lab-idempotence: venv ## Rerun site.yml on the lab; fail unless nothing changed
	bash scripts/check-idempotence.sh

.PHONY: cluster-test
cluster-test: venv ## Against a running lab: stickiness, alerts, a rollout, scale out and in
	$(BIN)/pytest -q tests/cluster

.PHONY: validation-test
validation-test: venv ## Bad input fed to site.yml on the lab: refused up front, nothing changed
	$(BIN)/pytest -q tests/validation

.PHONY: e2e-faults
e2e-faults: venv ## Faults under load on the lab: nothing lost
	$(BIN)/pytest -q tests/faults tests/hardening

.PHONY: bench
bench: venv ## Benchmark report on the lab (prints a table; not a test)
	$(PY) scripts/bench.py

.PHONY: bench-store
bench-store: venv ## Store latency: Gluster vs a local directory, through an LB and direct
	$(PY) scripts/bench_store.py

.PHONY: bench-rollout
bench-rollout: venv ## A full rolling upgrade under load: requests sent and failed
	$(PY) scripts/bench_rollout.py

.PHONY: test
test: ## The whole suite: lint, unit, image, Molecule, lab, cluster, validation and fault tests
	@mkdir -p .cache && rm -f "$$TIMED_RECORD"
	$(TIMED) "venv" $(MAKE) -s venv
	$(TIMED) "tools" $(MAKE) -s tools
	$(TIMED) "lint" $(MAKE) -s lint
	$(TIMED) "unit" $(MAKE) -s unit
	$(TIMED) "image" $(MAKE) -s image
	$(TIMED) "image-test" $(MAKE) -s image-test
	$(TIMED) "molecule" $(MAKE) -s molecule
	$(TIMED) "lab" $(MAKE) -s lab
	$(TIMED) "lab-idempotence" $(MAKE) -s lab-idempotence
	$(TIMED) "cluster-test" $(MAKE) -s cluster-test
	$(TIMED) "validation-test" $(MAKE) -s validation-test
	$(TIMED) "e2e-faults" $(MAKE) -s e2e-faults
	@$(TIMED) --summary

.PHONY: clean
clean: lab-down ## Remove the lab, built images and archives
	-docker image rm -f $$(docker image ls -q apptive-api) $$(docker image ls -q apptive-api-build) 2>/dev/null
	rm -rf build dist .cache
