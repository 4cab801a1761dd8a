# Two entry points, each self-sufficient on a fresh machine:
#   make run   creates .venv, installs seminal, reproduces every implemented claim (quick preset) into runs/,
#              builds report/ from it (the committed record changes only with `seminal reproduce --record`)
#   make test  creates .venv, installs seminal with test tools, runs the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench rllib faults clean

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

# inject each catalogued fault (faults/<slug>.toml) into a copy of src/ and check that its tests fail
PAPERS ?=
FAULT_JOBS ?= 2
faults: $(STAMP)
	SEMINAL_THREADS=1 $(BIN)/python faults/run.py --jobs $(FAULT_JOBS) $(PAPERS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks faults

# RLlib (paper 20's peer) pins its own gymnasium, so it gets its own venv; never install it into .venv
RLLIB_VENV ?= .venv-rllib
$(RLLIB_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(RLLIB_VENV)
	$(RLLIB_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(RLLIB_VENV)/bin/python -m pip install --quiet "torch==2.13.0"
	$(RLLIB_VENV)/bin/python -m pip install --quiet -e ".[rllib,dev]"
	touch $(RLLIB_VENV)/.installed

rllib: $(RLLIB_VENV)/.installed

clean:
	rm -rf $(VENV) $(RLLIB_VENV) runs report
