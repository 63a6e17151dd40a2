# The two commands of the README: `make run` and `make test`. Both set up what they need.
.PHONY: run test check setup setup-test bench fuzz clean

VENV := .venv
BIN := $(VENV)/bin

run: setup
	$(BIN)/courtcast up --demo

# PYTEST_WORKERS=2: the suite on 2 pytest-xdist workers (a test module stays on one worker,
# its module fixtures start once), then the `serial` tests (timing measurements) alone.
# 0 (the default until -n 2 has run green twice on a quiet machine): one process, as before.
PYTEST_WORKERS ?= 0

test: setup-test
	@$(MAKE) --no-print-directory check
ifeq ($(PYTEST_WORKERS),0)
	$(BIN)/pytest -q
else
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadscope -m "not serial"
	$(BIN)/pytest -q -m serial
endif

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
