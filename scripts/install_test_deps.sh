#!/usr/bin/env bash
# Install the test-only dependencies (requirements-test.txt: the field's evaluation code and ruff;
# it includes requirements-bench.txt) into .venv without their dependencies, so they never change
# the pinned packages. Idempotent: skipped when the stamp matches the files.
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
