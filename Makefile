# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: run cluster test lint typecheck fuzz bench bench-ab sweep soak redis-server clean

# The server and its runtime dependencies, in a virtual environment of its own.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $@

# What the tests need on top: pytest, hypothesis, pymemcache, mypy, ruff, atheris, coverage.
$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

# The npm memcached library the original Node.js client is built on.
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

run: $(VENV)/.installed
	@echo "kraken is installed in $(VENV)/: in another terminal, '. $(VENV)/bin/activate' puts it on the PATH"
	$(BIN)/kraken run $(ARGS)

# The example cluster of docs/cluster.md: a node on 12355 and a proxy in front of it on
# 12365 (admin APIs on 12356 and 12366), in the foreground; Ctrl-C stops both.
cluster: $(VENV)/.installed
	@echo "a node on 127.0.0.1:12355, a proxy in front of it on 127.0.0.1:12365 (docs/cluster.md); Ctrl-C stops both"
	@trap 'kill -INT $$node $$proxy 2>/dev/null; wait' INT TERM EXIT; \
	$(BIN)/kraken run --tcp-server-port 12355 & node=$$!; \
	$(BIN)/kraken run --tcp-server-port 12365 --upstream 127.0.0.1:12355 & proxy=$$!; \
	wait

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

test: $(VENV)/.installed-test node_modules/.installed lint typecheck
	$(BIN)/python -m pytest -q
	$(BIN)/python tests/fuzz/run.py --seconds $(FUZZ_TEST_SECONDS)

# Coverage-guided fuzzing of the wire parsers (tests/fuzz/README.md) for FUZZ_SECONDS;
# inputs reaching new code join tests/fuzz/corpus/, a failing one tests/fuzz/regressions/.
FUZZ_SECONDS ?= 600
FUZZ_TEST_SECONDS ?= 60
fuzz: $(VENV)/.installed-test
	$(BIN)/python tests/fuzz/run.py --seconds $(FUZZ_SECONDS) --merge

# What the benchmarks need on top: matplotlib for the sweep's plot; redis-server from Debian.
$(VENV)/.installed-bench: $(VENV)/.installed-test
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	touch $@

redis-server:
	@command -v redis-server >/dev/null || { \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y redis-server || { apt-get update && apt-get install -y redis-server; }; }

# Kraken against Redis pub/sub, side by side (docs/performance.md): BENCH_ARGS="--quick" etc.
BENCH_ARGS ?=
bench: $(VENV)/.installed-bench redis-server
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

# This tree's Kraken against its own src at commit BEFORE (default HEAD: the uncommitted
# change), both beside Redis, in one run (docs/performance.md, "A/B"). BEFORE's src is
# exported to a temporary directory, removed afterwards.
BEFORE ?= HEAD
AB_ARGS ?= --workloads fanout,idle --idle-sizes 5000 --rounds 2
bench-ab: $(VENV)/.installed-bench redis-server
	@commit=$$(git rev-parse --short --verify "$(BEFORE)^{commit}") || exit 2; \
	dir=$$(mktemp -d /tmp/kraken-before.XXXXXX) || exit 2; \
	echo "before = $(BEFORE) = $$commit, its src exported to $$dir"; \
	git archive "$$commit" src | tar -x -C "$$dir" && \
	$(BIN)/python -m benchmarks --kraken-src "before=$$dir/src" $(AB_ARGS) $(BENCH_ARGS); \
	status=$$?; rm -rf "$$dir"; exit $$status

# How cost grows with subscribers per topic, topics per message and payload size, and its plot.
SWEEP_ARGS ?= --plot docs/img/cost-growth.png
sweep: $(VENV)/.installed-bench redis-server
	$(BIN)/python -m benchmarks.sweep $(SWEEP_ARGS)

# The soak test (docs/performance.md, "Soak"): SOAK_MINUTES of mixed load on one server; fails
# when its RSS or open fds grow beyond the stated bounds. `make test` runs a 2-minute one.
SOAK_MINUTES ?= 30
SOAK_ARGS ?= --plot docs/img/soak.png
soak: $(VENV)/.installed-bench
	$(BIN)/python -m benchmarks.soak --minutes $(SOAK_MINUTES) $(SOAK_ARGS)

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache .hypothesis
