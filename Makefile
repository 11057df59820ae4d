# The two commands of the README. Each creates .venv when missing, installs into it once
# (again only when a requirements file changes), then runs.
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
RUN := PATH="$(BIN):$$PATH" DVC_NO_ANALYTICS=1

.PHONY: repro test

repro: $(VENV)/.installed-run
	$(RUN) dvc repro

test: $(VENV)/.installed-dev
	$(RUN) python -m pytest

$(BIN)/python:
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-run: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.installed-run
