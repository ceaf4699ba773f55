# fleetgate developer entry points. `make help` lists them.
# Needs only python3.11 (as `python3`, or set PYTHON=...) and GNU make on a fresh clone.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
LOCK   := requirements/dev.txt
STAMP  := $(VENV)/.installed.stamp
# uv's own version comes from the lock, so the tool that installs the lock is pinned by it too.
UV_VERSION := $(or $(shell sed -n 's/^uv==\([^ ;]*\).*/\1/p' $(LOCK) 2>/dev/null),0.13.9)
UV := $(BIN)/uv
export UV_PYTHON := $(BIN)/python
export UV_NO_PROGRESS := 1

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_.-]+:.*## / {printf "  %-13s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# --- environment -------------------------------------------------------------------------------

$(UV):
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if v == (3, 11) else f"need Python 3.11, $(PYTHON) is {v[0]}.{v[1]} (set PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

NODE_STAMP := deploy/local/node_modules/.installed.stamp
$(NODE_STAMP): deploy/local/package-lock.json
	npm ci --prefix deploy/local --no-audit --no-fund --loglevel=error
	@touch $@

$(STAMP): $(LOCK) pyproject.toml $(NODE_STAMP) | $(UV)
	$(UV) pip sync --quiet $(LOCK)
	$(UV) pip install --quiet --no-deps --no-build-isolation --editable .
	@rm -rf .mypy_cache  # mypy's cache can keep "module not found" across installs
	@touch $@

.PHONY: .venv
.venv: $(STAMP) ## Create/refresh .venv from the lock (cheap when nothing changed)

.PHONY: lock
lock: | $(UV) ## Re-resolve requirements/dev.txt after editing pyproject.toml (keeps existing pins)
	$(UV) pip compile pyproject.toml --group dev --universal --python-version 3.11 \
		--custom-compile-command "make lock" $(LOCK_FLAGS) --output-file $(LOCK)

.PHONY: lock-upgrade
lock-upgrade: LOCK_FLAGS = --upgrade
lock-upgrade: lock ## Re-resolve requirements/dev.txt taking the newest allowed versions

# Real Apache Kafka (KRaft) for the tests and FLEETGATE_BROKER=kafka: jars pinned in
# deploy/kafka/pom.xml, copied from Maven Central once (again only when the pom changes).
KAFKA_LIB   := .cache/kafka/lib
KAFKA_STAMP := $(KAFKA_LIB)/.copied.stamp
JAVA        := $(shell command -v java 2>/dev/null)
$(KAFKA_STAMP): deploy/kafka/pom.xml
	@command -v mvn >/dev/null || { echo "make kafka needs Maven (mvn) and Java 17+" >&2; exit 1; }
	rm -rf $(KAFKA_LIB)
	mvn -q -B -f deploy/kafka/pom.xml dependency:copy-dependencies \
		-DincludeScope=runtime -DoutputDirectory=$(CURDIR)/$(KAFKA_LIB)
	@touch $@

.PHONY: kafka
kafka: $(KAFKA_STAMP) ## Fetch the pinned Apache Kafka broker jars (cheap when nothing changed)

# Where Java is present the real-Kafka tests run, so their broker is fetched first.
KAFKA_IF_JAVA := $(if $(JAVA),$(KAFKA_STAMP))

# --- checks ------------------------------------------------------------------------------------

.PHONY: fmt
fmt: .venv ## Format code and apply safe lint fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

.PHONY: lint
lint: .venv ## Lint (ruff check + ruff format --check)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

.PHONY: typecheck
typecheck: .venv ## Type-check (mypy --strict on the protocol cores, mypy on everything)
	$(BIN)/mypy --strict libs/camproto
	$(BIN)/mypy --strict libs/dmtproto
	$(BIN)/mypy libs services tests

.PHONY: check
check: .venv ## The fast layer for the edit-test loop: lint, then the tests without sockets or brokers
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -m fast -q -p no:cacheprovider

# The suite runs on two workers (a module with a module-wide fixture stays on one, so the fixture
# starts once), then the tests marked `serial` (latency and deadline assertions) run alone;
# coverage adds up over both.
TEST_COV := --cov=camproto --cov=dmtproto --cov-branch
TEST_WORKERS ?= 2

.PHONY: test
test: .venv $(KAFKA_IF_JAVA) lint typecheck ## Lint, type-check, then run the test suite (protocol cores >= 95% branch coverage)
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup -m "not serial" --durations=15 $(TEST_COV) --cov-report=
	$(BIN)/pytest -m serial --durations=5 $(TEST_COV) --cov-append --cov-report=term --cov-fail-under=95

.PHONY: cov
cov: .venv ## Run the test suite with branch coverage (HTML in htmlcov/)
	$(BIN)/pytest --cov=camproto --cov=dmtproto --cov=contracts --cov=fleetgate --cov=simulator --cov-report=term --cov-report=html

.PHONY: bench
bench: .venv $(KAFKA_IF_JAVA) ## Run the benchmarks: protocol cores, then the whole pipeline (BENCH_FLAGS="--devices 50 --sessions 10000" for a bigger run)
	$(BIN)/python -m tests.bench.run
	$(BIN)/python -m tests.bench.connector
	$(BIN)/python -m tests.bench.registry
	$(BIN)/python -m tests.bench.pipeline $(BENCH_FLAGS)
	$(BIN)/python -m tests.bench.latency

.PHONY: run
run: .venv $(if $(filter kafka,$(FLEETGATE_BROKER)),$(KAFKA_STAMP)) ## Run the pipeline on an embedded broker and S3 server (Ctrl-C stops it; FLEETGATE_BROKER=kafka: on a local Apache Kafka)
	$(BIN)/fleetgate devstack

.PHONY: clean
clean: ## Remove .venv, caches and build output
	rm -rf $(VENV) build dist htmlcov .coverage .coverage.* .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -path ./.git -prune -o \( -name __pycache__ -o -name '*.egg-info' \) -prune -exec rm -rf {} +
