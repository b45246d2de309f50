#!/usr/bin/env bash
# Run every notebook in order with papermill for one profile (the loop: hsae_utils/pipeline/cli.py).
#
#   ./run_all.sh                     # the default `local` profile (CPU, embedded model + corpus)
#   ./run_all.sh --profile paper     # the paper's setting (GPU + Hugging Face hub access)
#   ./run_all.sh --profile smoke     # tiny budgets, a few minutes
#   ./run_all.sh --force             # re-run every notebook and recompute every output
#   ./run_all.sh --only 02           # just one notebook (--only 02,03: several)
#   ./run_all.sh --plan              # print the profile's resource plan and exit
#   ./run_all.sh --wait              # queue behind another run of the same profile and root
#   ./run_all.sh --no-setup          # skip ./scripts/setup.sh (already set up)
#   ./run_all.sh --launcher slurm    # caching, training (a job per seed) and evaluation as
#                                    # Slurm jobs (submitit), sized by the resource plan; then
#                                    # the other notebooks here (local-executor: local jobs)
#
# A full run of `local` also rewrites the results in docs/results.md and the findings in README.md
# (scripts/update_readme.py).
#
# Options, the profile and the output root are checked before any work; one run per output
# folder at a time (a lock in $HSAE_OUTPUT_ROOT/<profile>). Executed notebooks go to
# outputs/<profile>/notebooks/. A notebook that finished before (same code, same profile) is
# skipped if its outputs are still complete and valid (hsae_utils.pipeline.outputs); the notebooks reuse
# valid caches and finished runs, so after a failure a re-run redoes only what is missing.
# HSAE_OUTPUT_ROOT moves outputs/; HSAE_NOTEBOOK_DIR runs another notebook folder.
set -euo pipefail
cd "$(dirname "$0")"

profile=local
setup=1
plan=0
prev=""
for arg in "$@"; do
    case "$prev" in --profile) profile=$arg ;; esac
    case "$arg" in
        --profile=*) profile=${arg#*=} ;;
        --no-setup) setup=0 ;;
        --plan) plan=1 ;;
        -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    esac
    prev=$arg
done

# The checks need only the standard library: before the set-up, with any Python 3.
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
"$PY" -m hsae_utils.pipeline.cli --check-only "$@"
if [ "$plan" = 1 ]; then exec "$PY" -m hsae_utils.pipeline.cli "$@"; fi
if [ "$setup" = 1 ]; then
    t0=$SECONDS
    ./scripts/setup.sh --profile "$profile"
    # the set-up's wall time goes into timings.json beside the notebooks' (budgets include it)
    export HSAE_SETUP_SECONDS=$((SECONDS - t0))
fi
exec .venv/bin/python -m hsae_utils.pipeline.cli "$@"
