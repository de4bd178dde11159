# Two commands for a newcomer: `make demo` and `make test`. Everything else is a helper.
SHELL := /bin/bash
# Every recipe line fails on the first failing command, including inside a pipeline (`cmd | tee`).
.SHELLFLAGS := -e -o pipefail -c
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
DATA := $(or $(PM_DATA_DIR),data)
DEMO_DIR ?= $(or $(PM_RAW_DIR),$(DATA)/raw)/demo
# The demo's replayed prediction log: rebuilt from scratch by every `make demo` (replay adds part files).
REPLAY_DIR ?= $(DATA)/replayed_prediction_log
BENCH_SCRIPTS ?= $(wildcard bench/bench_*.py)
BENCH_RESULTS ?= bench/results
PYTEST_ARGS ?=

.PHONY: venv dev demo demo-reset test lock bench docs clean help

help:
	@echo "make demo   - create .venv, install, then generate -> ingest -> train -> serve -> monitor (embedded defaults, no server)"
	@echo "make test   - install test tools and run the whole suite (starts its own Redis/PostgreSQL)"
	@echo "make lock   - recompile requirements*.txt from requirements*.in"
	@echo "make bench  - run the benchmarks in bench/ (JSON to bench/results/)"
	@echo "make docs   - build the Great Expectations Data Docs and serve them on a local port (printed)"
	@echo 'make clean  - delete the data dir ($$PM_DATA_DIR, default ./data)'

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

# The demo world: 2000 markets over 547 days up to today in four time-sliced batches; the last batch
# (the last 122 days) is drifted. It ends today so the service, which answers as of now, serves fresh
# features (the price view's TTL is 3 days); the simulator only uses offsets from DEMO_START, so every
# day's world is the same one, shifted. Fewer markets make the held-out calibration too noisy for the
# ECE gate (docs/training.md, "Quality on simulated data").
DEMO_MARKETS ?= 2000
DEMO_END ?= $(shell date -u +%F)
DEMO_START ?= $(shell date -u -d '$(DEMO_END) - 547 days' +%F)
DEMO_DRIFT ?= $(shell date -u -d '$(DEMO_END) - 122 days' +%F)
DEMO_SEED ?= 7
# Written into the data dir by `make demo`: only a data dir holding it (or nothing) is reset by the next one.
DEMO_MARK := .made-by-make-demo

# Each `make demo` starts over, so a re-run trains on the same three batches as the first (left in
# place, the drifted fourth would be in the training set and fail the gates). It deletes the data dir
# only if a previous `make demo` wrote it; a data dir holding anything else is refused, never deleted.
demo-reset:
	@d=$$(realpath -m -- '$(DATA)'); \
	if [ -d "$$d" ] && [ -n "$$(ls -A -- "$$d")" ]; then \
	  if [ ! -e "$$d/$(DEMO_MARK)" ]; then \
	    echo "make demo: $$d holds data make demo did not write; set PM_DATA_DIR to another directory, or delete it (make clean)" >&2; \
	    exit 1; \
	  fi; \
	  $(DELETE_DATA_DIR); \
	fi; \
	mkdir -p -- "$$d" && touch -- "$$d/$(DEMO_MARK)"

demo: venv demo-reset
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
	rm -rf $(REPLAY_DIR)
	$(PY) -m monitoring replay --start $(DEMO_DRIFT)T00:00:00+00:00 --end $(DEMO_END)T00:00:00+00:00 \
		--log-dir $(REPLAY_DIR) --model champion
	$(PY) -m monitoring run --window 122d --end $(DEMO_END)T00:00:00+00:00 \
		--log-dir $(REPLAY_DIR) --model-version champion
	$(PY) -m ingestion show

test: dev
	$(PY) -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

lock: venv
	$(UV) pip compile requirements.in -o requirements.txt --python-version 3.11 --no-header -q
	$(UV) pip compile requirements-dev.in -o requirements-dev.txt --python-version 3.11 --no-header -q

# Each result is written to a temp file and renamed only if its benchmark succeeded; the first failing
# benchmark fails `make bench` (pipefail) and leaves no result file behind.
bench: dev
	mkdir -p $(BENCH_RESULTS)
	for s in $(BENCH_SCRIPTS); do \
		out=$(BENCH_RESULTS)/$$(basename $$s .py).json; \
		if $(PY) $$s | tee $$out.tmp; then mv $$out.tmp $$out; \
		else rm -f $$out.tmp; echo "make bench: $$s failed" >&2; exit 1; fi; \
	done

docs: venv
	$(PY) -m validation docs --serve

# Removes the data dir the platform uses ($$PM_DATA_DIR, default ./data), refusing /, $$HOME, the checkout
# and any folder holding the checkout or $$HOME (PM_DATA_DIR=.. would take the checkout with it).
# Shell snippet: delete the data dir $$d, refusing /, $$HOME, this checkout and anything holding them.
DELETE_DATA_DIR = home=$$(realpath -m -- "$$HOME"); here=$$(pwd -P); \
	case "$$d" in /|"$$home"|"$$here") echo "make $@: refusing to delete $$d" >&2; exit 1;; esac; \
	case "$$here/" in "$$d"/*) echo "make $@: refusing to delete $$d (it holds this checkout)" >&2; exit 1;; esac; \
	case "$$home/" in "$$d"/*) echo "make $@: refusing to delete $$d (it holds $$home)" >&2; exit 1;; esac; \
	echo "rm -rf $$d"; rm -rf -- "$$d"

clean:
	@d=$$(realpath -m -- '$(DATA)'); $(DELETE_DATA_DIR)
