# Everything runs inside .venv, which the first command makes by itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SHELL  := /bin/bash

# The embedded default: a local SMTP server on this machine that keeps what it
# receives in out/demo/sink/. Nothing leaves the machine; .env is not read.
DEMO_PORT ?= 2525

# Options for the outreach command behind a target, e.g.
#   make send ARGS=--retry-bounced
#   make report ARGS="--format html --out report.html"
ARGS ?=

.PHONY: demo test preview check send test-send inbox report sink contacts lint bench bench-bounces bench-sisimai clean help

help: ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(RUN_STAMP)

# What the staff's commands need: outreach alone, without the developer tools
# (mypy, ruff, playwright) that only `make test` and `make lint` use.
RUN_STAMP := $(VENV)/.installed-run

$(RUN_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

demo: $(RUN_STAMP) ## the whole job on this machine: check, preview, send to a local SMTP server, report
	$(BIN)/outreach demo --port $(DEMO_PORT)

send: $(RUN_STAMP) ## send the letters (asks first; reruns send only what is still owed)
	$(BIN)/outreach send $(ARGS)

test-send: $(RUN_STAMP) ## send one real letter, marked [TEST], to you only: make test-send TO=you@your-organisation.org
	@if [ -z "$(TO)" ]; then echo "Error: say where the test letter goes: make test-send TO=you@your-organisation.org" >&2; exit 2; fi
	$(BIN)/outreach test-send --to "$(TO)" $(ARGS)

contacts: $(RUN_STAMP) ## the missions' addresses and heads of mission from the UN Blue Book into the contacts file: make contacts BLUEBOOK=data.json
	@if [ -z "$(BLUEBOOK)" ]; then echo "Error: say where the Blue Book's data.json is: make contacts BLUEBOOK=~/Downloads/data.json" >&2; exit 2; fi
	$(BIN)/outreach bluebook "$(BLUEBOOK)" $(ARGS)

sink: $(RUN_STAMP) ## run the local SMTP server that stores messages in out/sink/
	$(BIN)/outreach sink $(ARGS)

test: $(STAMP) ## run the test suite (on every core)
	$(BIN)/pytest -n auto

preview: $(RUN_STAMP) ## write every letter to out/preview/ to look at
	$(BIN)/outreach preview $(ARGS)

check: $(RUN_STAMP) ## check settings, contacts, templates and letters, with a SpamAssassin score
	$(BIN)/outreach check $(ARGS)

inbox: $(RUN_STAMP) ## bounces and replies from the mailbox into the send log (reads, changes nothing)
	$(BIN)/outreach inbox $(ARGS)

report: $(RUN_STAMP) ## what became of every contact, from the send log
	$(BIN)/outreach report $(ARGS)

lint: $(STAMP) ## ruff and mypy
	$(BIN)/ruff check outreach tests
	$(BIN)/ruff format --check outreach tests
	$(BIN)/mypy

# The benchmark's own environment: outreach plus mailmerge, the peer it is
# measured against (never a dependency of outreach itself).
BENCH_VENV := benchmarks/.work/venv

$(BENCH_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet -e . 'mailmerge==2.3.*'
	touch $@

bench: $(BENCH_VENV)/.installed ## what users feel: sending across 50 ms of network beside mailmerge, preview, 20,000 letters, the rate limit (about 20 min); writes benchmarks/RESULTS.md
	$(BENCH_VENV)/bin/python benchmarks/bench.py

bench-bounces: $(STAMP) ## how many of flufl.bounce's ~117 real bounces `outreach inbox` records (downloads its source from PyPI into benchmarks/.work/); writes benchmarks/RESULTS.md
	$(BIN)/python benchmarks/bounces.py

bench-sisimai: $(STAMP) ## how `outreach inbox` reads 91 real bounces and automatic replies of Sisimai's set-of-emails (clones it from GitHub into benchmarks/.work/); writes benchmarks/RESULTS.md
	test -d benchmarks/.work/set-of-emails || git clone --quiet --depth 1 https://github.com/sisimai/set-of-emails benchmarks/.work/set-of-emails
	$(BIN)/python benchmarks/sisimai.py benchmarks/.work/set-of-emails

clean: ## remove the virtual environment and generated files
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache
