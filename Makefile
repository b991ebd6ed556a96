# Two commands do everything on a fresh machine (Python >= 3.11 and make):
#   make quick   install into .venv, start the servers, compare every engine, write a report
#   make test    install into .venv, lint, type-check and run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# engines shipped as their own distributions (docs/engines.md), installed after the main package
PLUGINS := plugins/durabench-absurd

.PHONY: quick test lint install image clean-venv temporal-server usecases

quick: $(VENV)/.installed
	$(BIN)/durabench run scenarios/quick.yaml

# the shipped use-case scenarios, one after another, with an index page (README, "Use cases")
usecases: $(VENV)/.installed
	$(BIN)/durabench suite scenarios/usecases/

test: $(VENV)/.installed lint
	$(BIN)/pytest

# ruff on the whole project, as `ruff check .` from the root does (notebooks and benchmarks included)
lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy

install: $(VENV)/.installed

# the runtime image of deploy: containers (needs a Docker daemon; cached by content, so a no-op when built)
image: $(VENV)/.installed
	$(BIN)/durabench image build

$(VENV)/.installed: pyproject.toml $(addsuffix /pyproject.toml,$(PLUGINS))
	$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "durabench needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet $(addprefix -e ,$(PLUGINS))
	$(BIN)/python -m harness.gobuild
	touch $@

# The production Temporal server and its SQL tool, built from the Go module proxy into
# ~/.cache/durabench/temporal-server/ (about 5 min the first time; the temporal-*-pg engines build it
# at first use otherwise). Not part of `make quick`.
temporal-server: $(VENV)/.installed
	$(BIN)/python -m harness.temporalbuild

clean-venv:
	rm -rf $(VENV)
