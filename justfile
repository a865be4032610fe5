# Routewise tasks. `just` lists them. Everything runs through uv, which installs what it needs.

set shell := ["bash", "-euo", "pipefail", "-c"]

# list the recipes
default:
    @just --list --unsorted

# --- dev ---

# install the locked environment (dev tools included)
[group('dev')]
sync:
    uv sync --frozen

# run Routewise locally: embedded NATS and Postgres, five services (Ctrl-C stops)
[group('dev')]
dev *ARGS:
    uv run --frozen routewise dev {{ARGS}}

# the same, sending a few demo tasks and costs
[group('dev')]
demo:
    uv run --frozen routewise dev --demo

# --- test ---

# the whole suite, against real NATS and Postgres (env URLs, testcontainers or embedded)
[group('test')]
test *ARGS:
    uv run --frozen pytest {{ARGS}}

# fast tests only (no service processes)
[group('test')]
test-fast:
    uv run --frozen pytest -m "not e2e"

# the wheel built and installed in a fresh venv: the client pulls no server dependency
[group('test')]
test-packaging:
    uv run --frozen pytest -m packaging -n0 tests/integration/test_packaging.py

# kill -9 every service, restart NATS, kill Postgres under a few thousand events: nothing lost or doubled (bench/results/chaos.json)
[group('test')]
test-chaos *ARGS:
    uv run --frozen pytest -m chaos -n0 -s tests/chaos {{ARGS}}

# the opt-in test that exports a task's trace to a real Arize Phoenix and reads it back
test-trace-backend:
    uv run --frozen --group phoenix pytest -m trace_backend tests/e2e/test_tracing.py

# --- lint ---

# ruff lint and format check, mypy strict
[group('lint')]
lint:
    uv run --frozen ruff check .
    uv run --frozen ruff format --check .
    bash .ci/typecheck

# apply ruff's fixes and formatting
[group('lint')]
fmt:
    uv run --frozen ruff check --fix .
    uv run --frozen ruff format .

# --- bench ---

# cost.estimate throughput and latency with 1, 10 and 100 alternatives (bench/results/cost_estimate.json)
[group('bench')]
bench-estimate *ARGS:
    uv run --frozen python -m bench.cost_estimate {{ARGS}}

# budget-enforcer reservations and CostRecorded ingestion, exact totals checked (bench/results/budget.json)
[group('bench')]
bench-budget *ARGS:
    uv run --frozen python -m bench.budget {{ARGS}}

# performance-tracker ingestion and snapshot lag (bench/results/performance.json)
[group('bench')]
bench-performance *ARGS:
    uv run --frozen python -m bench.performance {{ARGS}}

# selector decisions/s and TaskArrived→ModelSelected p50/p99 at 100, 500 and 1,000 tasks/s offered (bench/results/selector.json)
[group('bench')]
bench-selector *ARGS:
    uv run --frozen python -m bench.selector {{ARGS}}

# metrics reports over a 1,000,000-task ledger, and the indexes they use (bench/results/metrics_report.json)
[group('bench')]
bench-metrics *ARGS:
    uv run --frozen python -m bench.metrics_report {{ARGS}}

# gateway API-key authentication with and without its 5 s cache, 1 and 32 callers (bench/results/keys_auth.json)
[group('bench')]
bench-keys *ARGS:
    uv run --frozen python -m bench.keys_auth {{ARGS}}

# the learning strategy's APGR and CPT on ../shared/data/routing-eval (bench/results/routing_eval.json)
[group('bench')]
routing-eval *ARGS:
    uv run --frozen python -m bench.routing_eval {{ARGS}}

# the latency the gateway adds over the mock provider, beside LiteLLM's proxy, at 50/100/200 req/s (bench/results/gateway.json)
[group('bench')]
bench-gateway *ARGS:
    uv run --frozen python -m bench.gateway {{ARGS}}

# a decision's CPU (every process: the five services, NATS, Postgres) and latency at 25-200 tasks/s, fsync on and off, beside LiteLLM's proxy's CPU per request (bench/results/fast_path.json)
[group('bench')]
bench-fast-path *ARGS:
    uv run --frozen python -m bench.fast_path {{ARGS}}

# --- docs ---

# regenerate docs/asyncapi (each service's AsyncAPI document) from the code
[group('docs')]
asyncapi:
    uv run --frozen python -m routewise.runtime.asyncapi

# --- ci ---

# what CI runs
[group('ci')]
ci:
    bash .ci/run
