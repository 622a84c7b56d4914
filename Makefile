# The two commands of the README: `make run` and `make test`. Everything else they need is installed here.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FAST_SOURCES := $(wildcard src/mimird/_fast/*.pyx src/mimird/_fast/*.pxd)
PYTEST_ARGS ?=

.PHONY: run test lint build clean peers bench-peers bench

$(STAMP): pyproject.toml setup.py $(FAST_SOURCES)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel "cython>=3.0" "numpy>=1.26"
	$(PY) -m pip install -q --no-build-isolation -e '.[test]'
	touch $(STAMP)

build: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/mimird

# Debian packages of the reference peers that the peer tests talk to (prometheus, promtool, amtool, and
# memcached for the results cache's memcached backend).
peers:
	@if ! command -v promtool >/dev/null 2>&1 || ! command -v amtool >/dev/null 2>&1 \
	    || ! test -x /usr/bin/memcached; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
	    prometheus prometheus-alertmanager memcached >/dev/null; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests setup.py $(wildcard bench)

test: $(STAMP) peers lint
	$(PY) -m pytest $(PYTEST_ARGS)

# VictoriaMetrics, the speed mark of the query benchmark (bench only; no test needs it).
bench-peers: peers
	@if ! test -x /usr/bin/victoria-metrics; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends victoria-metrics >/dev/null; \
	fi

# Side-by-side benchmarks against Debian's Prometheus and VictoriaMetrics (figures, not pass/fail).
bench: $(STAMP) bench-peers
	$(PY) -m pip install -q -e '.[bench]' --no-build-isolation
	$(PY) bench/ingest.py
	$(PY) bench/query.py

clean:
	rm -rf build $(VENV) src/*.egg-info src/mimird/_fast/*.c src/mimird/_fast/*.so
