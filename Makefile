# Two commands matter: `make run` and `make test`. Everything else is a building block.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install lock test run lint format bench clean

# Exactly the locked versions (hashes checked), then the project itself without resolving anything.
# The C extension (app/servicing/_rows.c) is built by the editable install: a change to it reinstalls.
$(STAMP): pyproject.toml requirements-dev.lock app/servicing/_rows.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements-dev.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# Re-resolve the locks from pyproject.toml, keeping every pin that still satisfies it. To move one
# dependency: make lock UPGRADE="--upgrade-package fastapi"; all of them: make lock UPGRADE=--upgrade.
LOCK := $(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes --quiet $(UPGRADE)
lock: install
	$(LOCK) -o requirements.lock
	$(LOCK) --extra dev -o requirements-dev.lock

# Runs the whole suite against real PostgreSQL and Redis: the ones at TEST_DATABASE_URL / TEST_REDIS_URL,
# else 127.0.0.1:5432 / :6379, else an embedded pair started under ./.data (app/devstack.py).
# Then the live tests once more, with the app reaching PostgreSQL through a real PgBouncer in transaction
# pooling mode (tests/engines.py fetches Debian's package when none is installed; skipped, saying why,
# where it cannot run). Exit status 5 there means PYTEST_ARGS selected no live test.
test: install
	$(BIN)/python -m app.devstack test -- $(BIN)/python -m pytest $(PYTEST_ARGS)
	$(BIN)/python -m app.devstack test -- $(BIN)/python -m pytest --through-pgbouncer $(PYTEST_ARGS) \
		|| [ $$? -eq 5 ]

# Migrate, start the worker, load sample data once, serve on http://127.0.0.1:8000.
run: install
	$(BIN)/python -m app.devstack run

# ruff's lint rules and format, then mypy (its files and strictness are in pyproject.toml).
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	$(BIN)/python -m app.devstack bench -- $(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .data .pytest_cache .ruff_cache .mypy_cache build app/servicing/_rows.*.so
