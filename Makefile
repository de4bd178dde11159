# Two commands for a newcomer: `make demo` and `make test`. Everything else is a helper.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
DEMO_DIR ?= data/raw/demo
PYTEST_ARGS ?=

.PHONY: venv dev demo test lock bench docs clean help

help:
	@echo "make demo   - create .venv, install, generate -> ingest -> show (embedded defaults, no server)"
	@echo "make test   - install test tools and run the whole suite (starts its own Redis/PostgreSQL)"
	@echo "make lock   - recompile requirements*.txt from requirements*.in"
	@echo "make bench  - run the benchmarks in bench/ (JSON to bench/results/)"
	@echo "make docs   - build the Great Expectations Data Docs and serve them on a local port (printed)"

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q uv==0.9.30
	$(UV) pip install -q --python $(PY) -r requirements.txt
	touch $@

$(VENV)/.dev-installed: $(VENV)/.installed requirements-dev.txt
	$(UV) pip install -q --python $(PY) -r requirements.txt -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

dev: $(VENV)/.dev-installed

demo: venv
	rm -rf $(DEMO_DIR)
	$(PY) -m ingestion generate --markets 300 --start 2024-01-01 --end 2024-06-30 --seed 7 --batches 3 --out $(DEMO_DIR)
	for b in $(DEMO_DIR)/batch-*; do $(PY) -m ingestion ingest $$b || exit 1; done
	$(PY) -m ingestion show

test: dev
	$(PY) -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

lock: venv
	$(UV) pip compile requirements.in -o requirements.txt --python-version 3.11 --no-header -q
	$(UV) pip compile requirements-dev.in -o requirements-dev.txt --python-version 3.11 --no-header -q

bench: dev
	mkdir -p bench/results
	for s in bench/bench_*.py; do $(PY) $$s | tee bench/results/$$(basename $$s .py).json; done

docs: venv
	$(PY) -m validation docs --serve

clean:
	rm -rf data
