# Two commands for a newcomer: `make demo` and `make test`. Everything else is a helper.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
DATA := $(or $(PM_DATA_DIR),data)
DEMO_DIR ?= $(DATA)/raw/demo
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

# The demo world: 2000 markets over 18 months in four time-sliced batches; the last batch is drifted
# from DEMO_DRIFT on. Fewer markets make the held-out calibration too noisy for the ECE gate
# (docs/training.md, "Quality on simulated data").
DEMO_MARKETS ?= 2000
DEMO_START ?= 2024-01-01
DEMO_END ?= 2025-07-01
DEMO_DRIFT ?= 2025-03-01
DEMO_SEED ?= 7

demo: venv
	rm -rf $(DEMO_DIR)
	$(PY) -m ingestion generate --markets $(DEMO_MARKETS) --start $(DEMO_START) --end $(DEMO_END) \
		--seed $(DEMO_SEED) --batches 4 --drift-start $(DEMO_DRIFT) --out $(DEMO_DIR)
	for b in 001 002 003; do $(PY) -m ingestion ingest $(DEMO_DIR)/batch-$$b || exit 1; done
	$(PY) -m features apply
	$(PY) -m features materialize --start $(DEMO_START)T00:00:00Z --end $(DEMO_END)T00:00:00Z
	$(PY) -m training train --promote
	$(PY) -m ingestion ingest $(DEMO_DIR)/batch-004
	$(PY) -m features materialize --start $(DEMO_DRIFT)T00:00:00Z --end $(DEMO_END)T00:00:00Z
	$(PY) -m scripts.demo_serving
	$(PY) -m monitoring replay --start $(DEMO_DRIFT)T00:00:00+00:00 --end $(DEMO_END)T00:00:00+00:00 \
		--log-dir $(DATA)/replayed_prediction_log --model champion
	$(PY) -m monitoring run --window 122d --end $(DEMO_END)T00:00:00+00:00 \
		--log-dir $(DATA)/replayed_prediction_log --model-version champion
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
