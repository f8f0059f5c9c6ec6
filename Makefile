# `make run` and `make test` are the two commands of the README. Both create the virtualenv
# they need, pinned by uv.lock; the only prerequisite is Python 3.11+.
PYTHON ?= python3
UV_VERSION := 0.13.9
UV := .tools/bin/uv
VENV := .venv
STAMP := $(VENV)/.synced-$(shell cat uv.lock pyproject.toml 2>/dev/null | cksum | cut -d' ' -f1)

.PHONY: run test lint fmt proto clean bench-http bench-auth bench-jobs bench-plugins bench-grpc bench-soak bench-scaleout bench-events bench-tracing bench-cluster bench-console bench-servers bench-stock bench-cli

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(STAMP): uv.lock pyproject.toml | $(UV)
	rm -f $(VENV)/.synced-*
	$(UV) sync --frozen --quiet
	touch $@

run: $(STAMP)
	$(VENV)/bin/arcana serve

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy src
	$(VENV)/bin/lint-imports

fmt: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: $(STAMP)
	bash scripts/system-deps.sh
	$(MAKE) --no-print-directory lint
	$(VENV)/bin/pytest

# Soak: make bench-soak (10 minutes), make bench-soak ARGS="--duration 60" (short run).
bench-soak: $(STAMP)
	$(VENV)/bin/python bench/soak.py $(ARGS)
bench-auth: $(STAMP)
	$(VENV)/bin/python bench/auth.py
bench-http: $(STAMP)
	$(VENV)/bin/python bench/http_api.py
# `arcana --help` and `arcana users list` up to its own work, embedded and PostgreSQL.
bench-cli: $(STAMP)
	$(VENV)/bin/python bench/cli_startup.py $(ARGS)

# gRPC vs the bare servicer (h2load); make bench-grpc ARGS=--callgrind counts instructions per call.
bench-grpc: $(STAMP)
	$(VENV)/bin/python bench/grpc.py $(ARGS)
bench-scaleout: $(STAMP)
	$(VENV)/bin/python bench/scaleout.py
bench-plugins: $(STAMP)
	$(VENV)/bin/python bench/plugins.py
# Tracing cost (off / 100 % / 1 % sampling): make bench-tracing ARGS="--duration 1" to check.
bench-tracing: $(STAMP)
	$(VENV)/bin/python bench/tracing.py $(ARGS)

# Cost of one stock change, counted: make bench-stock ARGS="--callgrind --database-url postgresql+asyncpg://…"
bench-stock: $(STAMP)
	$(VENV)/bin/python bench/stock.py $(ARGS)

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache

proto: $(STAMP)
	$(VENV)/bin/python proto/generate.py
bench-events: $(STAMP)
	$(VENV)/bin/python bench/events.py
# Queue partitions on a private 3-master Redis Cluster: make bench-cluster ARGS="--jobs 2000" (short).
bench-cluster: $(STAMP)
	$(VENV)/bin/python bench/cluster.py $(ARGS)
bench-console: $(STAMP)
	$(VENV)/bin/python bench/console.py $(ARGS)
# The other queue libraries live only in bench/.venv, never in the project's dependencies.
bench/.venv/.jobs-ready: pyproject.toml | $(UV)
	$(UV) venv --quiet --allow-existing bench/.venv
	$(UV) pip install --quiet --python bench/.venv/bin/python -e . "dramatiq[redis]" taskiq taskiq-redis saq uvloop
	touch $@

bench-jobs: bench/.venv/.jobs-ready
	bench/.venv/bin/python bench/jobs.py $(ARGS)

# `arcana serve --server uvicorn` and `--server granian` in one run: make bench-servers ARGS="--duration 1 --rounds 1" to check.
bench-servers: $(STAMP)
	$(VENV)/bin/python bench/servers.py $(ARGS)
