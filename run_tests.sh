#!/usr/bin/env bash
# The whole test suite: unit tests, then every notebook under nbval on the `smoke` profile.
# Arguments go to pytest (e.g. ./run_tests.sh -x -k reliability); HSAE_OUTPUT_ROOT is checked
# (created and writable) before the set-up.
set -euo pipefail
cd "$(dirname "$0")"
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
"$PY" -m hsae_utils.pipeline --check-only --profile smoke
./scripts/setup.sh --profile smoke
if [ -x scripts/install_test_deps.sh ]; then ./scripts/install_test_deps.sh; fi
export HSAE_PROFILE=smoke
exec .venv/bin/python -m pytest tests notebooks --nbval-lax \
    --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout=900 -q "$@"
