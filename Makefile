# langchain-opa-guard: `make demo` runs the demo, `make test` runs every check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
OPA_VERSION := v1.22.2
TOOLS := $(CURDIR)/.tools/bin
OPA := $(or $(OPA_BIN),$(shell command -v opa 2>/dev/null),$(TOOLS)/opa)
JAEGER := $(or $(JAEGER_BIN),$(TOOLS)/jaeger)

.PHONY: demo test lint typecheck policy-test pytest bench eval clean opa jaeger

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.dev: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install -q -e '.[dev]'
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

## Everything: lint, types, Rego checks and tests, pytest against a real OPA.
test: $(VENV)/.dev $(VENV)/.agentdojo opa jaeger lint typecheck policy-test pytest

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.dev
	$(BIN)/mypy

policy-test: opa
	$(OPA) check --strict policies server-policies
	$(OPA) fmt --fail --list policies server-policies
	$(OPA) test policies server-policies

pytest: $(VENV)/.dev $(VENV)/.agentdojo opa jaeger
	OPA_BIN=$(OPA) JAEGER_BIN=$(JAEGER) $(BIN)/pytest -q --nbmake tests notebooks

## The benchmarks (figures and ratios, not tests); writes benchmarks/RESULTS.md.
bench: $(VENV)/.dev opa
	$(BIN)/pip install -q -r benchmarks/requirements.txt
	OPA_BIN=$(OPA) $(BIN)/python benchmarks/run_all.py

## AgentDojo's four suites replayed through the guard (minutes); writes benchmarks/agentdojo/RESULTS.md.
eval: $(VENV)/.agentdojo
	$(BIN)/python benchmarks/agentdojo/run_eval.py

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache
