#!/usr/bin/env bash
# The whole test suite: unit tests, then every notebook under nbval on the `smoke` profile, then
# every notebook again on `paper-tiny` (the paper's code path on local hub replicas).
# Arguments go to pytest (e.g. ./run_tests.sh -x -k reliability); HSAE_OUTPUT_ROOT is checked
# (created and writable) before the set-up.
set -euo pipefail
cd "$(dirname "$0")"
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
"$PY" -m hsae_utils.pipeline.cli --check-only --profile smoke
./scripts/setup.sh --profile smoke
if [ -x scripts/install_test_deps.sh ]; then ./scripts/install_test_deps.sh; fi
# Lint and format first (seconds; configured in pyproject.toml): `ruff format .` and
# `ruff check --fix .` repair most findings.
.venv/bin/python -m ruff check .
.venv/bin/python -m ruff format --check .
export HSAE_PROFILE=smoke
# The Colab set-up cell in a fresh environment (tests/test_colab.py, ~5 min); 0 leaves it out.
export HSAE_TEST_COLAB_RUNTIME=${HSAE_TEST_COLAB_RUNTIME:-1}
.venv/bin/python -m pytest tests notebooks --nbval-lax \
    --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout=900 -q "$@"
# The paper's code path (Gemma-2 architecture, OpenWebText, SAEBench's probing datasets) on local
# replicas of the hub repositories, built at set-up: every notebook again on `paper-tiny`.
.venv/bin/python -m hsae_utils.pipeline.prepare --profile paper-tiny
HSAE_PROFILE=paper-tiny exec .venv/bin/python -m pytest notebooks --nbval-lax \
    --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout=900 -q
