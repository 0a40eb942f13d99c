# Two commands set everything up on a machine with Python 3.10+ and make:
#   make demo   creates .venv, installs mailcli and runs the whole flow locally
#   make test   creates .venv, installs mailcli with test extras, runs ruff, mypy and the suite
#   make coverage  the suite under coverage (subprocesses included), per package
#   make walkthrough   regenerates docs/walkthrough.md (a first hour, real output)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test venv lint bench walkthrough fuzz clean

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
	$(BIN)/ruff check mailcli tests benchmarks
	$(BIN)/mypy mailcli
	$(BIN)/python -m pytest -q

# Every Python process the tests start (python -m mailcli, serve, render
# workers, import readers) is measured too: [tool.coverage.run] in
# pyproject.toml. Then one line per package; `coverage report -m` or
# `coverage html` afterwards for the lines.
COVERAGE := $(BIN)/python -m coverage
PACKAGES := store importer config send render privacy feedback deliverability commands

coverage: venv
	rm -f .coverage .coverage.*
	$(COVERAGE) run -m pytest -q
	$(COVERAGE) combine -q
	@printf '%-24s %7s\n' package covered
	@printf '%-24s %6s%%\n' mailcli/ "$$($(COVERAGE) report --format=total --include='mailcli/*' --omit='mailcli/*/*')"
	@for p in $(PACKAGES); do \
	  printf '%-24s %6s%%\n' mailcli/$$p "$$($(COVERAGE) report --format=total --include="mailcli/$$p/*")"; \
	done
	@printf '%-24s %6s%%\n' all "$$($(COVERAGE) report --format=total)"

# ruff, mypy, the layering rules of ARCHITECTURE.md, radon's complexity and
# vulture's dead code (each finding that stays says why); a few seconds.
# `radon cc -n C -s mailcli` and `vulture` (configured in pyproject.toml) show
# the details.
lint: venv
	$(BIN)/ruff check mailcli tests benchmarks
	$(BIN)/mypy mailcli
	$(BIN)/python -m pytest -q tests/codebase/test_architecture.py tests/codebase/test_code_health.py

bench: venv
	$(BIN)/python benchmarks/run.py

walkthrough: venv
	$(BIN)/python docs/walkthrough.py

# Long fuzzing runs of the CSV, config, feedback and serve harnesses in
# tests/fuzz (a short seeded budget of them runs in `make test`):
#   make fuzz FUZZ_SECONDS=3600 FUZZ_SURFACES="csv serve"
# Coverage-guided with atheris where it installs, with hypothesis otherwise.
FUZZ_SECONDS  ?= 300
FUZZ_SURFACES ?=
fuzz: venv
	$(BIN)/python -m pip install --quiet 'atheris>=2.3' || echo "atheris did not install: fuzzing with hypothesis"
	$(BIN)/python -m tests.fuzz --seconds $(FUZZ_SECONDS) $(FUZZ_SURFACES)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .fuzz build dist *.egg-info .coverage .coverage.* htmlcov
