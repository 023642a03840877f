# Everything runs inside .venv, which the first command makes by itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SHELL  := /bin/bash

# The embedded default: a local SMTP server on this machine that keeps what it
# receives in out/demo/sink/. Nothing leaves the machine; a .env is overridden.
DEMO_PORT ?= 2525
DEMO_ENV  := SMTP_HOST=127.0.0.1 SMTP_PORT=$(DEMO_PORT) SMTP_SECURITY=none \
             SMTP_USERNAME= SMTP_PASSWORD= SMTP_CA_FILE= \
             MAIL_FROM=campaign@coalition.example MAIL_FROM_NAME="Coalition letter (demo)" \
             MAIL_REPLY_TO= CAMPAIGN=demo LOG_DIR=out/demo/logs PREVIEW_DIR=out/demo/preview \
             SEND_RATE_PER_MINUTE=0 SEND_DAILY_LIMIT=0

.PHONY: demo test preview check send report sink lint bench clean help

help: ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(STAMP) ## the whole job on this machine: preview, send to a local SMTP server, report
	@rm -rf out/demo
	@$(BIN)/outreach sink --port $(DEMO_PORT) --dir out/demo/sink & sink=$$!; \
	trap 'kill $$sink 2>/dev/null; wait $$sink 2>/dev/null' EXIT; \
	for _ in $$(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$(DEMO_PORT)) 2>/dev/null && break; sleep 0.1; done; \
	env $(DEMO_ENV) $(BIN)/outreach preview && \
	env $(DEMO_ENV) $(BIN)/outreach send --yes && \
	env $(DEMO_ENV) $(BIN)/outreach report && \
	echo "The letters as received are in out/demo/sink/; the send log is out/demo/logs/send-log.csv."

send: $(STAMP) ## send the letters (asks first; reruns send only what is still owed)
	$(BIN)/outreach send

sink: $(STAMP) ## run the local SMTP server that stores messages in out/sink/
	$(BIN)/outreach sink

test: $(STAMP) ## run the test suite (on every core)
	$(BIN)/pytest -n auto

preview: $(STAMP) ## write every letter to out/preview/ to look at
	$(BIN)/outreach preview

check: $(STAMP) ## check settings, contacts, templates and letters, with a SpamAssassin score
	$(BIN)/outreach check

report: $(STAMP) ## what became of every contact, from the send log
	$(BIN)/outreach report

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

clean: ## remove the virtual environment and generated files
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache
