#!/usr/bin/env bash
# Install the test-only dependencies (requirements-test.txt: the field's evaluation code, ruff and
# selenium; it includes requirements-bench.txt) into .venv without their dependencies, so they never
# change the pinned packages, and, as root with apt-get, Debian's chromium and chromium-driver for
# the feature browser's test (tests/test_browser.py; skipped without them). Idempotent: skipped
# when the stamp matches the files and chromium is there.
set -euo pipefail
cd "$(dirname "$0")/.."
VPY=.venv/bin/python
[ -x "$VPY" ] || { echo "error: no .venv; run scripts/setup.sh first." >&2; exit 1; }
stamp=.venv/.hsae-test-deps
want=$("$VPY" -c 'import hashlib; print(hashlib.sha256(b"".join(open(f, "rb").read() for f in ("requirements-test.txt", "requirements-bench.txt"))).hexdigest())')  # portable
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "[test deps] installing requirements-test.txt (--no-deps)"
    "$VPY" -m pip install --quiet --no-deps -r requirements-test.txt
    "$VPY" -c 'import sae_bench.evals.absorption.feature_absorption_calculator, sae_bench.evals.core.main, sae_bench.evals.sparse_probing.probe_training'
    "$VPY" scripts/bench_peers.py  # the peers' modules import (see requirements-bench.txt)
    "$VPY" -m ruff --version  # the linter run_tests.sh calls
    echo "$want" > "$stamp"
fi
# The feature browser's test drives a real Chromium through Selenium (its own browser downloads are
# not used: the distribution's chromium and its matching driver). Optional: the test is skipped
# without them, so a failed install only warns.
if ! command -v chromedriver >/dev/null 2>&1 \
        || ! { command -v chromium || command -v chromium-browser; } >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "[test deps] installing chromium and chromium-driver (apt-get)"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            chromium chromium-driver >/dev/null; } \
            || echo "warning: chromium not installed; tests/test_browser.py's browser test will be skipped" >&2
    else
        echo "[test deps] no chromium: tests/test_browser.py's browser test will be skipped" \
             "(install chromium and its chromedriver to run it)" >&2
    fi
fi
