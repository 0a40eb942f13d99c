# Two commands set everything up on a machine with Python 3.10+ and make:
#   make demo   creates .venv, installs mailcli and runs the whole flow locally
#   make test   creates .venv, installs mailcli with test extras and runs the suite
#   make walkthrough   regenerates docs/walkthrough.md (a first hour, real output)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test venv lint bench walkthrough clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(BIN)/mailcli demo

test: venv
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check mailcli tests benchmarks

bench: venv
	$(BIN)/python benchmarks/run.py

walkthrough: venv
	$(BIN)/python docs/walkthrough.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build dist *.egg-info
