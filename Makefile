# Two commands matter: `make run` and `make test`. Everything else is a building block.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test run lint format bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Runs the whole suite against real PostgreSQL and Redis: the ones at TEST_DATABASE_URL / TEST_REDIS_URL,
# else 127.0.0.1:5432 / :6379, else an embedded pair started under ./.data (app/devstack.py).
test: install
	$(BIN)/python -m app.devstack test -- $(BIN)/python -m pytest $(PYTEST_ARGS)

# Migrate, start the worker, load sample data once, serve on http://127.0.0.1:8000.
run: install
	$(BIN)/python -m app.devstack run

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	$(BIN)/python -m app.devstack bench -- $(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .data .pytest_cache .ruff_cache .mypy_cache
