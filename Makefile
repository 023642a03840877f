# Everything runs inside .venv, which the first command makes by itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test preview check send report sink lint bench clean help

help: ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(STAMP) ## the whole job on the embedded default: previews of every letter
	$(BIN)/outreach preview

test: $(STAMP) ## run the test suite
	$(BIN)/pytest

preview: $(STAMP) ## write every letter to out/preview/ to look at
	$(BIN)/outreach preview

check: $(STAMP) ## check settings, contacts and templates before sending
	$(BIN)/outreach check

lint: $(STAMP) ## ruff and mypy
	$(BIN)/ruff check outreach tests
	$(BIN)/ruff format --check outreach tests
	$(BIN)/mypy

clean: ## remove the virtual environment and generated files
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache
