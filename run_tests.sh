#!/usr/bin/env bash
# The whole test suite: unit tests, then every notebook under nbval on the `smoke` profile.
set -euo pipefail
cd "$(dirname "$0")"
./scripts/setup.sh
export HSAE_PROFILE=smoke
exec .venv/bin/python -m pytest tests notebooks --nbval-lax \
    --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout=900 -q "$@"
