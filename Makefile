# Every target creates or updates the local virtual environment first, so a fresh
# clone needs only Python 3.10+ and make. CI uses 3.11; any python3 will do.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test quick lint typecheck docs check clean bench bench-quick bench-deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,docs]'
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

# The documentation site, from docs/ and the docstrings, into site/; any warning
# (a broken link, a docstring griffe cannot read) fails the build. The variable
# silences a banner that Material for MkDocs prints about its own future.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

check: test lint typecheck docs

# Benchmarks (see README, "Benchmarks"): never part of `make test` or CI. Each run
# writes a new Markdown report to benchmarks/results/.
bench: $(STAMP)
	$(BIN)/python -m benchmarks

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks --quick

# What the benchmark can use but does not need: Postfix's smtp-sink as the fast
# sink, and Nodemailer as a contender. "No configuration" leaves Postfix itself
# unconfigured, so no mail daemon starts or listens on port 25.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
bench-deps:
	@if [ -x /usr/sbin/smtp-sink ]; then echo "smtp-sink: already installed"; else \
		echo "postfix postfix/main_mailer_type select No configuration" \
			| $(SUDO) debconf-set-selections && \
		$(SUDO) apt-get update -q && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
			--no-install-recommends postfix && \
		{ $(SUDO) systemctl disable --now postfix 2>/dev/null || true; }; fi
	@if command -v npm >/dev/null; then cd benchmarks/node && npm ci --no-audit --no-fund; \
		else echo "npm not found (Debian packages nodejs npm): Nodemailer is skipped"; fi

clean:
	rm -rf $(VENV)
