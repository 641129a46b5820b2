# Every target creates or updates the local virtual environment first, so a fresh
# clone needs only Python 3.10+ and make. CI uses 3.11; any python3 will do.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test quick lint typecheck check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m smtppool.testing.demo

test: $(STAMP)
	$(BIN)/python -m pytest

# Leaves out the tests marked slow (forks by the dozen, gunicorn, Celery, 12,800
# messages from 64 threads); `make test` and CI run them all.
quick: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy --strict smtppool

check: test lint typecheck

clean:
	rm -rf $(VENV)
