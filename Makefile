# Two commands on a fresh machine with Python 3.11: `make run`, `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install run demo test lint format migrate seed messages clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Web + Celery worker + beat on the embedded default, with demo data.
run: install
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	$(BIN)/python manage.py seed_demo
	$(BIN)/python scripts/run_all.py

# The whole story through the public API, against a running `make run`
# (another terminal); DEMO_BASE_URL if it is not at http://127.0.0.1:8000.
demo: install
	$(BIN)/python scripts/demo.py

# Lint, then the suite. DATABASE_URL / REDIS_URL select the real stack.
test: install lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

migrate: install
	$(BIN)/python manage.py migrate --noinput

seed: migrate
	$(BIN)/python manage.py seed_demo

# Rebuild the English catalogue after changing user-facing strings (the
# zh_Hans one holds the libraries' admin labels, kept by hand: compiled only).
messages: install
	$(BIN)/python manage.py makemessages -l en --ignore=.venv --ignore=tests
	$(BIN)/python manage.py compilemessages -l en -l zh_Hans --ignore=.venv

clean:
	rm -rf $(VENV) var staticfiles db.sqlite3 db.sqlite3-*
