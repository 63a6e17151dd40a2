# The two commands of the README: `make run` and `make test`. Both set up what they need.
.PHONY: run test check setup setup-test bench fuzz clean

VENV := .venv
BIN := $(VENV)/bin

run: setup
	$(BIN)/courtcast up --demo

# the suite on PYTEST_WORKERS pytest-xdist workers, 0: one process (scripts/test.sh says how)
PYTEST_WORKERS ?= 2

test: setup-test
	@$(MAKE) --no-print-directory check
	PYTEST_WORKERS=$(PYTEST_WORKERS) scripts/test.sh

# the house: lint and format, types, import rules (pyproject.toml holds each tool's config)
check:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

setup:
	@scripts/setup.sh venv

setup-test:
	@scripts/setup.sh test

bench:
	@scripts/setup.sh bench
	$(BIN)/python bench/ingest_hls.py

fuzz: setup
	$(BIN)/python bench/fuzz_rtmp.py

clean:
	rm -rf $(VENV) data .pytest_cache .hypothesis
