#!/usr/bin/env bash
# Run every notebook in order with papermill for one profile.
#
#   ./run_all.sh                     # the default `local` profile (CPU, embedded model + corpus)
#   ./run_all.sh --profile paper     # the paper's setting (GPU + Hugging Face hub access)
#   ./run_all.sh --profile smoke     # tiny budgets, a few minutes
#   ./run_all.sh --force             # re-run every notebook and recompute every output
#   ./run_all.sh --only 02           # just one notebook
#   ./run_all.sh --no-setup          # skip ./scripts/setup.sh (already set up)
#
# A full run of `local` also rewrites the results section of README.md (scripts/update_readme.py).
#
# Executed notebooks (with their outputs, or the error) go to outputs/<profile>/notebooks/.
# A notebook that finished before (same notebook file, same profile definition) is skipped on a
# re-run if its outputs are still complete and valid (hsae_utils.stages); the notebooks themselves
# also reuse valid caches and finished training runs, so after a failure a re-run redoes only what
# is missing. HSAE_OUTPUT_ROOT moves outputs/; HSAE_NOTEBOOK_DIR runs another notebook folder.
set -euo pipefail
cd "$(dirname "$0")"

profile=local
only=""
force=0
setup=1
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) profile="$2"; shift 2 ;;
        --profile=*) profile="${1#*=}"; shift ;;
        --only) only="$2"; shift 2 ;;
        --force) force=1; shift ;;
        --no-setup) setup=0; shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "error: unknown option $1 (valid: --profile NAME, --only NN, --force, --no-setup)" >&2; exit 2 ;;
    esac
done

if [ "$setup" = 1 ]; then ./scripts/setup.sh; fi
VPY=.venv/bin/python
# Fail fast, before any long work, on an unknown profile (the error lists the valid ones).
profile_sha=$("$VPY" -m hsae_utils.stages stamp "$profile")

nbdir=${HSAE_NOTEBOOK_DIR:-notebooks}
export HSAE_OUTPUT_ROOT="$(realpath -m "${HSAE_OUTPUT_ROOT:-outputs}")"  # notebooks run in $nbdir
outdir="$HSAE_OUTPUT_ROOT/$profile/notebooks"
mkdir -p "$outdir/.done"
start=$(date +%s)

# Wall seconds of each notebook, and the machine, in $outdir/timings.json (read by
# scripts/benchmark.py, section 6). A notebook skipped as done keeps the time of its last run.
record_time() {  # record_time NOTEBOOK SECONDS
    "$VPY" - "$outdir/timings.json" "$1" "$2" <<'PY' || echo "warning: timings.json not updated" >&2
import os, platform, sys
from datetime import datetime
from hsae_utils.io import read_json, write_json_atomic  # a temporary file, then renamed
path, name, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
t = read_json(path) if os.path.exists(path) else {"notebooks": {}}
try:
    cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
except (OSError, StopIteration):
    cpu = platform.processor()
nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
now = datetime.now().astimezone().isoformat(timespec="seconds")
t["notebooks"][name] = {"seconds": seconds, "date": now}
t.update(date=now, total_s=sum(n["seconds"] for n in t["notebooks"].values()),
         machine={"nproc": nproc, "cpu_model": cpu})
write_json_atomic(path, t)
PY
}

for nb in "$nbdir"/[0-9][0-9]_*.ipynb; do
    name=$(basename "$nb")
    [ -n "$only" ] && [[ "$name" != "$only"* ]] && continue
    marker="$outdir/.done/$name"
    stamp=$( { sha256sum < "$nb"; echo "$profile_sha"; } | sha256sum | cut -d' ' -f1)
    if [ "$force" = 0 ] && [ -z "$only" ] && [ "$(cat "$marker" 2>/dev/null)" = "$stamp" ] \
            && [ -f "$outdir/$name" ] && "$VPY" -m hsae_utils.stages check "$profile" "$name"; then
        echo "=== $name: done before, skipped (--force re-runs it)"
        continue
    fi
    echo "=== $name (profile: $profile)"
    t0=$(date +%s)
    params=(-p profile "$profile")
    [ "$force" = 1 ] && params+=(-p rebuild_cache True -p force_retrain True -p force True)
    rm -f "$marker"
    if ! HSAE_PROFILE="$profile" "$VPY" -m papermill "$nb" "$outdir/$name" "${params[@]}" \
            --cwd "$nbdir" --kernel python3 --progress-bar; then
        echo "error: notebook $name failed; the executed copy with the error is $outdir/$name" >&2
        exit 1
    fi
    echo "$stamp" > "$marker"
    secs=$(( $(date +%s) - t0 ))
    record_time "$name" "$secs"
    echo "    done in $secs s -> $outdir/$name"
done
echo "All notebooks ran for profile '$profile' in $(( $(date +%s) - start )) s."
echo "Outputs: $HSAE_OUTPUT_ROOT/$profile/ (activations, saes, results), figures: figures/, notebooks: $outdir/"
# A full run of a profile whose results README.md shows (markers <!-- results:<profile>:start -->)
# rewrites that block from the run's own tables, figures and timings.
if [ -z "$only" ] && [ "$nbdir" = notebooks ] && grep -q "<!-- results:$profile:start -->" README.md; then
    "$VPY" scripts/update_readme.py --profile "$profile"
fi
