# Set-up and everyday commands. `make serve` and `make test` work on a fresh machine that has
# Python 3.11 and make (`.ci/run` also installs the PostgreSQL server package the tests use).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# The suite in worker processes (pytest-xdist): most tests wait on servers, databases and
# subprocesses, so 2 workers on 2 cores take ~60 % of the time of one. PYTEST_WORKERS=0 runs it in one.
PYTEST_WORKERS ?= 2

.PHONY: venv serve test lint dist clean

venv: $(STAMP)

# Reinstall only when pyproject.toml changed since the last install.
$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

serve: venv
	ROOST_DATABASE_URL="$${ROOST_DATABASE_URL:-sqlite:///./roost.db}" $(VENV)/bin/roost serve

test: venv
	$(VENV)/bin/python -m pytest -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check roost tests

# One-file executable in dist/roost (PyInstaller; installs it into the venv when missing).
dist: venv
	$(VENV)/bin/python packaging/build.py --out dist/roost

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
