# langchain-opa-guard: `make demo` runs the demo, `make test` runs every check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
VENV_MIN := .venv-min
OPA_VERSION := v1.22.2
TOOLS := $(CURDIR)/.tools/bin
OPA := $(or $(OPA_BIN),$(shell command -v opa 2>/dev/null),$(TOOLS)/opa)
JAEGER := $(or $(JAEGER_BIN),$(TOOLS)/jaeger)

.PHONY: demo test test-min lint typecheck policy-test pytest bench eval clean opa jaeger bundle bundle-check

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.dev: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# The lowest versions pyproject.toml allows: every dependency (and the agents extra) pinned
# to its floor, the test tools at their newest.
$(VENV_MIN)/.installed: pyproject.toml tools/min_constraints.py
	rm -rf $(VENV_MIN)
	$(PYTHON) -m venv $(VENV_MIN)
	$(VENV_MIN)/bin/pip install -q --upgrade pip
	$(PYTHON) tools/min_constraints.py pyproject.toml agents > $(VENV_MIN)/constraints.txt
	$(VENV_MIN)/bin/pip install -q -e '.[dev,agentdojo]' -c $(VENV_MIN)/constraints.txt
	touch $@

# AgentDojo (an optional extra: it pulls in LLM SDKs) for the replay in benchmarks/agentdojo.
$(VENV)/.agentdojo: pyproject.toml $(VENV)/.dev
	$(BIN)/pip install -q -e '.[dev,agentdojo]'
	touch $@

$(TOOLS)/opa:
	mkdir -p $(TOOLS)
	CGO_ENABLED=0 GOBIN=$(TOOLS) go install github.com/open-policy-agent/opa@$(OPA_VERSION)

opa: $(if $(filter $(TOOLS)/opa,$(OPA)),$(TOOLS)/opa)

# Jaeger v2 for the end-to-end tracing test, pinned in tools/jaeger/go.mod.
$(TOOLS)/jaeger: tools/jaeger/go.mod tools/jaeger/go.sum
	mkdir -p $(TOOLS)
	cd tools/jaeger && CGO_ENABLED=0 go build -o $(TOOLS)/jaeger github.com/jaegertracing/jaeger/cmd/jaeger

jaeger: $(if $(filter $(TOOLS)/jaeger,$(JAEGER)),$(TOOLS)/jaeger)

## The main demo: five customer-database scenarios on the embedded engine (OPA_URL=... for a server).
demo: $(VENV)/.installed
	$(BIN)/python -m langchain_opa_guard.demo

## Everything: lint, types, Rego checks and tests, the shipped bundle, pytest against a real OPA.
test: $(VENV)/.dev $(VENV)/.agentdojo opa jaeger lint typecheck policy-test bundle-check pytest

## The wasm bundle of policies/ shipped with the package: rebuilt when policies/ changed
## (rerun after a merge that touched policies/, then commit it); bundle-check fails when stale.
bundle: $(VENV)/.installed opa
	OPA_BIN=$(OPA) $(BIN)/python tools/policy_bundle.py build

bundle-check: $(VENV)/.installed
	$(BIN)/python tools/policy_bundle.py check

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.dev
	$(BIN)/mypy

policy-test: opa
	$(OPA) check --strict policies server-policies
	$(OPA) fmt --fail --list policies server-policies
	$(OPA) test policies server-policies

## The suites built on tests/mediation_kit.node_graph run a second time with the guard as the
## agent's edge (PolicyGuardNode.edge) instead of a node after tools_condition.
EDGE_SUITES = $(shell grep -l node_graph tests/test_*.py)

pytest: $(VENV)/.dev $(VENV)/.agentdojo opa jaeger
	OPA_BIN=$(OPA) JAEGER_BIN=$(JAEGER) $(BIN)/pytest -q --nbmake tests notebooks
	OPA_GUARD_TEST_WIRING=edge OPA_BIN=$(OPA) JAEGER_BIN=$(JAEGER) $(BIN)/pytest -q $(EDGE_SUITES)

## The pytest suite again on the declared minimum versions of the dependencies.
test-min: $(VENV_MIN)/.installed opa jaeger
	@echo "dependencies pinned to their floors:" && cat $(VENV_MIN)/constraints.txt
	OPA_BIN=$(OPA) JAEGER_BIN=$(JAEGER) $(VENV_MIN)/bin/pytest -q tests
	OPA_GUARD_TEST_WIRING=edge OPA_BIN=$(OPA) JAEGER_BIN=$(JAEGER) $(VENV_MIN)/bin/pytest -q $(EDGE_SUITES)

## The benchmarks (figures and ratios, not tests); writes benchmarks/RESULTS.md.
bench: $(VENV)/.dev opa
	$(BIN)/pip install -q -r benchmarks/requirements.txt
	OPA_BIN=$(OPA) $(BIN)/python benchmarks/run_all.py

## AgentDojo's four suites replayed through the guard (minutes); writes benchmarks/agentdojo/RESULTS.md.
eval: $(VENV)/.agentdojo opa
	OPA_BIN=$(OPA) $(BIN)/python benchmarks/agentdojo/run_eval.py

clean:
	rm -rf $(VENV) $(VENV_MIN) .tools .pytest_cache .mypy_cache .ruff_cache
