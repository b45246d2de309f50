#!/usr/bin/env bash
# The GPU checks in one prepared run (the step limits add up to 9 min 20 s on one H100; results
# under a folder):
#   1. tests/test_gpu_paths.py, tests/test_paper_tiny_bf16.py, tests/test_logreg.py: absorption's
#      L1 probe and the probes' torch fits (evals.logreg) on the GPU against the CPU / sklearn
#      path, the bf16 forward rule, weights placed straight on the GPU, TF32 only inside the
#      model's forward, the tiny Gemma-2's bf16 forward against fp32;
#   probe_fits: the batched torch probe fits at the `paper` profile's sizes, timed, against the
#      plan's estimate (resources.probe_fit_seconds), in probe_fits.json;
#   2. the paper code path (`paper-tiny`: tiny Gemma-2 and the hub replicas) on CUDA: cache,
#      train one TopK SAE, evaluate (core, absorption, probing), once with the model in bf16 (what
#      `paper` runs on a bf16 card) and once in fp32; the metrics side by side, with their
#      differences, in paper_tiny_cuda.json;
#   3. the benchmark's sections that run on the GPU (1 roofline, 5 evaluation, 7 sparse step,
#      9 probing pooling), fp32, and 1 and 7 again under bf16 autocast.
# Every step has its own time limit, so one that hangs does not take the others with it; the
# summary (summary.txt) lists each step's exit status and seconds.
#
#   scripts/gpu_check.sh [--cpu] [OUT_DIR]    (default: $OUT when set, else outputs/gpu_check)
#
# --cpu: a dry run of the same steps on the CPU (no GPU needed; minutes): the GPU tests skip, the
# paper-tiny run and the probe-fit timing run on the CPU (at 1/20 of the paper's sizes), the
# benchmark is left out; it checks that the script and its Python run, not the GPU numbers.
#
# Needs the environment of scripts/setup.sh (PYTHON: its interpreter, default .venv/bin/python)
# and the built corpus (outputs/corpus, from `python -m hsae_utils.pipeline.prepare`).
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=cuda
if [ "${1:-}" = "--cpu" ]; then DEVICE=cpu; shift; fi
OUT_DIR=$(mkdir -p "${1:-${OUT:-outputs/gpu_check}}" && cd "${1:-${OUT:-outputs/gpu_check}}" && pwd)
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python
SUMMARY="$OUT_DIR/summary.txt"
: > "$SUMMARY"

if [ "$DEVICE" = cuda ] && ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA GPU visible to $PY: run this on a GPU machine (or --cpu: a dry run)." | tee -a "$SUMMARY"
    exit 2
fi
echo "gpu_check on $DEVICE, $(date -u +%FT%TZ)" | tee -a "$SUMMARY"
nvidia-smi > "$OUT_DIR/nvidia-smi.txt" 2>&1 || true
export HSAE_CHECK_DEVICE=$DEVICE
export HSAE_OUTPUT_ROOT="$OUT_DIR/outputs" PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$HSAE_OUTPUT_ROOT"
[ -e outputs/corpus ] && ln -sfn "$PWD/outputs/corpus" "$HSAE_OUTPUT_ROOT/corpus"

step() {  # step NAME LIMIT_S COMMAND...: run with a time limit, log, record status and seconds
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" > "$OUT_DIR/$name.log" 2>&1
    local rc=$?
    printf '%-28s rc=%-4s %5d s  (%s.log)\n' "$name" "$rc" $((SECONDS - t0)) "$name" | tee -a "$SUMMARY"
}

step tests 120 "$PY" -m pytest -q tests/test_gpu_paths.py tests/test_paper_tiny_bf16.py \
    tests/test_logreg.py

step probe_fits 45 "$PY" - "$OUT_DIR/probe_fits.json" <<'PYEOF'
# The probe fits of one SAE at the paper profile's sizes (random SAE-like latents: the cost does
# not depend on the values), timed on the device, against the plan's estimate.
import json, os, sys, time
import torch
from hsae_utils.config import get_profile
from hsae_utils.evals import logreg
from hsae_utils.pipeline import resources as res

dev = os.environ["HSAE_CHECK_DEVICE"]
P = get_profile("paper")
shrink = 1 if dev == "cuda" else 20  # the CPU dry run: 1/20 of the rows
sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
g = torch.Generator(device=dev).manual_seed(0)
n_abs = int(0.8 * res.absorption_words(P)) // shrink
n_classes = res.probing_n_texts(P) // (P.probe_train_per_class + P.probe_test_per_class)
n_probe = 2 * P.probe_train_per_class // shrink
out = {"device": dev, "shrink": shrink, "fits": []}
t_all = time.perf_counter()
for name, n_problems, n_rows, ks in (
    ("absorption", 26, n_abs, range(1, 11)),
    ("probing", n_classes, n_probe, P.probe_k_values),
):
    for k in ks:
        X = torch.relu(torch.randn(n_problems, n_rows, k, device=dev, generator=g) - 1.0)
        y = torch.rand(n_problems, n_rows, device=dev, generator=g) < 0.2
        X[..., 0] += 0.8 * y  # some signal
        sync()
        t0 = time.perf_counter()
        fit = logreg.fit_logreg(X, y, balanced=name == "absorption")
        sync()
        out["fits"].append({"eval": name, "k": k, "problems": n_problems, "rows": n_rows,
                            "seconds": time.perf_counter() - t0,
                            "newton_steps_max": int(fit.n_iter.max()),
                            "converged": bool(fit.converged.all())})
out["seconds_per_sae"] = time.perf_counter() - t_all
out["plan_estimate_seconds_per_sae"] = res.probe_fit_seconds(P) / shrink
json.dump(out, open(sys.argv[1], "w"), indent=1)
print(f"probe fits of one SAE at 1/{shrink} of the paper's rows on {dev}: "
      f"{out['seconds_per_sae']:.2f} s (plan estimate {out['plan_estimate_seconds_per_sae']:.2f} s);"
      f" max Newton steps {max(f['newton_steps_max'] for f in out['fits'])}, all converged: "
      f"{all(f['converged'] for f in out['fits'])}")
PYEOF

step paper_tiny_$DEVICE 180 "$PY" - "$OUT_DIR/paper_tiny_$DEVICE.json" <<'PYEOF'
import dataclasses, json, os, sys, time
import torch
import hsae_utils as hs
from hsae_utils.config import REPO_ROOT, get_profile
from hsae_utils.data import dataset_replicas
from hsae_utils.data.forward import model_dtype
from hsae_utils.data.model import load_model
from hsae_utils.data.tiny_gemma import ensure_replica

dev = os.environ["HSAE_CHECK_DEVICE"]
corpus = REPO_ROOT / "outputs" / "corpus"
ensure_replica(corpus)
dataset_replicas.ensure_dataset_replicas(corpus)
out = {}
for dtype in ("bfloat16", "float32"):
    t0 = time.perf_counter()
    P = dataclasses.replace(get_profile("paper-tiny"), name=f"paper-tiny-{dev}-{dtype}",
                            device=dev, model_dtype="float32")
    if dtype == "bfloat16":  # the rule: Gemma-2 on a bf16 card runs in bf16 (fp32 on the CPU)
        model = load_model(P)
    else:
        from transformer_lens.model_bridge import TransformerBridge
        from hsae_utils.data.model import model_source, placement
        model = TransformerBridge.boot_transformers(model_source(P), dtype=torch.float32,
                                                    **placement(dev))
        model.eval()
    hs.cache_activations(P, model=model)
    trained = hs.train_sae(P, "topk", seed=42, progress=False)
    res = hs.evaluate_saes(P, [trained], progress=False, model=model)
    out[dtype] = {"model_dtype": str(model_dtype(model)), "seconds": time.perf_counter() - t0,
                  "metrics": res.results.set_index("metric")["value"].to_dict()}
    print(dtype, out[dtype]["model_dtype"], f"{out[dtype]['seconds']:.0f} s")
a, b = out["bfloat16"]["metrics"], out["float32"]["metrics"]
out["difference_bf16_minus_fp32"] = {k: a[k] - b[k] for k in a if k in b and ":" not in k}
json.dump(out, open(sys.argv[1], "w"), indent=1, default=str)
for k in ("ce_loss_without_sae", "ce_loss_with_sae", "kl_div_with_sae", "explained_variance",
          "llm_top_1_test_accuracy", "sae_top_1_test_accuracy", "mean_absorption_fraction_score"):
    if k in a and k in b:
        print(f"{k:<34} bf16 {a[k]:.4f}  fp32 {b[k]:.4f}  diff {a[k] - b[k]:+.4f}")
PYEOF

if [ "$DEVICE" = cuda ]; then
    step benchmark_fp32 130 "$PY" scripts/benchmark.py --device cuda --quick --sections 1 5 7 9 \
        --dims 2304 --json "$OUT_DIR/benchmark_fp32.json"
    step benchmark_bf16 50 "$PY" scripts/benchmark.py --device cuda --dtype bf16 --quick \
        --sections 1 7 --dims 2304 --json "$OUT_DIR/benchmark_bf16.json"
    # the preflight on this card: the batch sizes it picks (rc 1 where the disk is too small)
    step preflight 20 "$PY" -m hsae_utils.pipeline.resources check paper --no-hub
fi
step plan 15 "$PY" -m hsae_utils.pipeline.resources plan paper
echo "results in $OUT_DIR" | tee -a "$SUMMARY"
