#!/usr/bin/env bash
# The GPU checks in one prepared run (about 10 minutes on one H100), results under a folder:
#   1. tests/test_gpu_paths.py and tests/test_paper_tiny_bf16.py: absorption's L1 probe on the GPU
#      against the CPU path, the bf16 forward rule, the tiny Gemma-2's bf16 forward against fp32;
#   2. the paper code path (`paper-tiny`: tiny Gemma-2 and the hub replicas) on CUDA: cache,
#      train one TopK SAE, evaluate (core, absorption, probing), once with the model in bf16 (what
#      `paper` runs on a bf16 card) and once in fp32; the metrics side by side, with their
#      differences, in paper_tiny_cuda.json;
#   3. the benchmark's sections that run on the GPU (1 roofline, 5 evaluation, 7 sparse step,
#      9 probing pooling), fp32, and 1 and 7 again under bf16 autocast.
# Every step has its own time limit, so one that hangs does not take the others with it; the
# summary (summary.txt) lists each step's exit status and seconds.
#
#   scripts/gpu_check.sh [OUT_DIR]     (default: $OUT when set, else outputs/gpu_check)
#
# Needs the environment of scripts/setup.sh (PYTHON: its interpreter, default .venv/bin/python)
# and the built corpus (outputs/corpus, from `python -m hsae_utils.pipeline.prepare`).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=$(mkdir -p "${1:-${OUT:-outputs/gpu_check}}" && cd "${1:-${OUT:-outputs/gpu_check}}" && pwd)
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python
SUMMARY="$OUT_DIR/summary.txt"
: > "$SUMMARY"

if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA GPU visible to $PY: run this on a GPU machine." | tee -a "$SUMMARY"
    exit 2
fi
nvidia-smi > "$OUT_DIR/nvidia-smi.txt" 2>&1 || true
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

step tests 180 "$PY" -m pytest -q tests/test_gpu_paths.py tests/test_paper_tiny_bf16.py

step paper_tiny_cuda 240 "$PY" - "$OUT_DIR/paper_tiny_cuda.json" <<'PYEOF'
import dataclasses, json, sys, time
import torch
import hsae_utils as hs
from hsae_utils.config import REPO_ROOT, get_profile
from hsae_utils.data import dataset_replicas
from hsae_utils.data.forward import model_dtype
from hsae_utils.data.model import load_model
from hsae_utils.data.tiny_gemma import ensure_replica

corpus = REPO_ROOT / "outputs" / "corpus"
ensure_replica(corpus)
dataset_replicas.ensure_dataset_replicas(corpus)
out = {}
for dtype in ("bfloat16", "float32"):
    t0 = time.perf_counter()
    P = dataclasses.replace(get_profile("paper-tiny"), name=f"paper-tiny-cuda-{dtype}",
                            device="cuda", model_dtype="float32")
    if dtype == "bfloat16":  # the rule: Gemma-2 on a bf16 card runs in bf16
        model = load_model(P)
    else:
        from transformer_lens.model_bridge import TransformerBridge
        from hsae_utils.data.model import model_source
        model = TransformerBridge.boot_transformers(model_source(P), device="cuda",
                                                    dtype=torch.float32)
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

step benchmark_fp32 180 "$PY" scripts/benchmark.py --device cuda --quick --sections 1 5 7 9 \
    --dims 2304 --json "$OUT_DIR/benchmark_fp32.json"
step benchmark_bf16 90 "$PY" scripts/benchmark.py --device cuda --dtype bf16 --quick \
    --sections 1 7 --dims 2304 --json "$OUT_DIR/benchmark_bf16.json"
step plan 30 "$PY" -m hsae_utils.pipeline.resources plan paper
echo "results in $OUT_DIR" | tee -a "$SUMMARY"
