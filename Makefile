# The habits of this project. Each target sets up what it needs by itself.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8929
DEMO_DATA ?= .forge-data/demo

.PHONY: dev system-deps serve test lint typecheck check bench clean gitlab-suite

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,dev]'
	touch $(STAMP)

dev: $(STAMP) system-deps

# The real clients the tests drive. Installed with apt-get when missing (root or sudo).
system-deps:
	@./scripts/system-deps.sh

# --fresh empties the demo's data directory, but only once it holds the directory's lock:
# a second `make serve` fails at once and leaves a running demo alone.
serve: dev
	$(BIN)/forge serve --fresh --host $(HOST) --port $(PORT) --data-dir $(DEMO_DATA) --seed fixtures/demo.yml \
	  $(if $(REGISTRY),--registry $(REGISTRY)) $(if $(WORKERS),--workers $(WORKERS)) \
	  $(if $(DATABASE_URL),--database-url $(DATABASE_URL))

# The whole suite twice: on SQLite (the embedded default), then on PostgreSQL (a throwaway
# cluster the run starts itself); the fleet tests (several server processes) run in the second.
test: dev
	$(BIN)/python -m pytest -n 2 -q -m "not fleet"
	FORGE_TEST_DATABASE=postgresql $(BIN)/python -m pytest -n 2 -q

lint: $(STAMP)
	$(BIN)/ruff check forge tests bench scripts

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

# python-gitlab's own functional tests (pinned sdist) for the claimed areas, against a fresh forge.
gitlab-suite: dev
	PYTHON=$(abspath $(BIN))/python ./scripts/python-gitlab-suite.sh

bench: dev
	$(BIN)/python bench/run.py

# Refuses while a forge holds a data directory under .forge-data (its forge.lock is flock'ed).
clean:
	@for lock in .forge-data/*/forge.lock; do \
	  [ -e "$$lock" ] || continue; \
	  flock -n "$$lock" true || { echo "$${lock%/forge.lock} is in use by a forge (pid $$(cat $$lock)); stop it first" >&2; exit 1; }; \
	done
	rm -rf $(VENV) .forge-data .pytest_cache
