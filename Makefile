# Two entry points, each self-sufficient on a fresh machine:
#   make run   creates .venv, installs seminal, reproduces every implemented claim (quick preset) into runs/,
#              builds report/ from it (the committed record changes only with `seminal reproduce --record`)
#   make test  creates .venv, installs seminal with test tools, runs the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[rl,marl,distributed,dev]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/seminal reproduce --all --preset quick --first-seed 1000 --jobs 2 --out runs; status=$$?; \
	$(BIN)/seminal report --results runs/results; exit $$status

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs report
