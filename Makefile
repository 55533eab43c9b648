# Every target installs what it needs into .venv first (a stamp file skips it when nothing changed).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test check lint chaos bench scale clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/chimeway demo $(DEMO_ARGS)

test: $(STAMP)
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check chimeway adapters tests

check: lint test

chaos: $(STAMP)
	$(BIN)/python -m tests.chaos

bench: $(STAMP)
	$(BIN)/python -m tests.bench

# Issue 13's figures on a loaded database (1 M deliveries; SCALE_ARGS="--scale-sizes 1000000,10000000" for 10 M too).
scale: $(STAMP)
	$(BIN)/python -m tests.bench --sections scale $(SCALE_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info chimeway.sqlite3*
