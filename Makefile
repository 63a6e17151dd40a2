# The two commands of the README: `make run` and `make test`. Both set up what they need.
.PHONY: run test setup setup-test bench fuzz clean

VENV := .venv
BIN := $(VENV)/bin

run: setup
	$(BIN)/courtcast up --demo

test: setup-test
	$(BIN)/pytest -q

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
