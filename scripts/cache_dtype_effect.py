"""What storing the activation cache in bf16 or fp16 (`Profile.cache_dtype`, bf16 for the GPU
profiles) changes, measured on a CPU profile's fp32 cache:

    python scripts/cache_dtype_effect.py [--profile local] [--runs topk stage5_clustering]

For each storage dtype the training split is rounded to it (what a cache in that dtype holds) and
the same SAEs are trained on it (same seed, same batches); each is then evaluated against the fp32
validation split (explained variance) and spliced into the model (CE loss recovered, KL), and also
on the validation split rounded to the same dtype (what the evaluation of such a profile reads).
Writes `figures/cache_dtype_effect_<profile>.csv` (atomically) and prints the table.
Needs the profile's activation cache (notebook 01).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from hsae_utils.analysis.report.tables import FIGURES_DIR  # noqa: E402
from hsae_utils.config import get_profile  # noqa: E402
from hsae_utils.data.activations import ActivationStore  # noqa: E402
from hsae_utils.data.model import load_model, model_fingerprint  # noqa: E402
from hsae_utils.evals.adapter import SAEAdapter  # noqa: E402
from hsae_utils.evals.core import build_splice_data, reconstruction_metrics, splice_metrics  # noqa: E402
from hsae_utils.evals.run import eval_cache_root  # noqa: E402
from hsae_utils.experiment.ground_truth.data import TensorStore  # noqa: E402  (an in-memory store)
from hsae_utils.io import atomic_path  # noqa: E402
from hsae_utils.method.saes import ARCHITECTURES, config_from_profile  # noqa: E402
from hsae_utils.method.train import TrainConfig, train  # noqa: E402
from hsae_utils.runs import get_run  # noqa: E402

DTYPES = ("float32", "bfloat16", "float16")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="local")
    ap.add_argument("--runs", nargs="+", default=["topk", "stage5_clustering"])
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args(argv)
    P = get_profile(args.profile)
    train_store = ActivationStore(P.cache_dir / "train", cache_dtype=P.cache_dtype)
    valid = ActivationStore(P.cache_dir / "validation", cache_dtype=P.cache_dtype)
    if P.cache_dtype != "float32":
        raise SystemExit(
            f"error: profile {P.name!r} caches in {P.cache_dtype}; this compares "
            "against an fp32 cache: use a CPU profile such as `local`."
        )
    x_train, x_valid = train_store.read_all(), valid.read_all()
    model = load_model(P)
    splice = build_splice_data(
        model,
        valid.tokens()[: P.n_eval_contexts],
        P.layer,
        valid.manifest["special_token_ids"],
        massive_factor=valid.manifest.get("massive_norm_factor"),
        cache_root=eval_cache_root(P),
        fingerprint=model_fingerprint(P),
        batch_contexts=P.eval_batch_contexts,
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in DTYPES:
            rounded = lambda x, dtype=dtype: x.to(getattr(torch, dtype)).float()  # noqa: E731
            store = TensorStore(rounded(x_train), train_store.normalizer)
            for name in args.runs:
                spec = get_run(name, P)
                sae = ARCHITECTURES[spec.arch](
                    config_from_profile(spec.arch, P, **spec.overrides), seed=args.seed
                )
                res = train(
                    sae,
                    store,
                    TrainConfig.from_profile(P, args.seed),
                    Path(tmp) / f"{dtype}-{name}",
                )
                adapter = SAEAdapter(res.sae, valid.manifest["normalization"])
                m = reconstruction_metrics(adapter, x_valid)
                m_rounded = reconstruction_metrics(adapter, rounded(x_valid))
                s = splice_metrics(
                    model, splice, {name: adapter}, P.layer, batch_contexts=P.eval_batch_contexts
                )[name]
                rows.append(
                    {
                        "cache_dtype": dtype,
                        "run": name,
                        "explained_variance": m["explained_variance_legacy"],
                        "explained_variance_on_rounded_valid": m_rounded[
                            "explained_variance_legacy"
                        ],
                        "l0": m["l0"],
                        "ce_loss_score": s["ce_loss_score"],
                        "kl_div_score": s["kl_div_score"],
                    }
                )
    table = pd.DataFrame(rows)
    ref = table[table.cache_dtype == "float32"].set_index("run")
    for col in ("explained_variance", "ce_loss_score"):
        table[f"{col}_minus_fp32"] = table[col] - table["run"].map(ref[col])
    out = FIGURES_DIR / f"cache_dtype_effect_{P.name}.csv"
    with atomic_path(out) as path:
        table.to_csv(path, index=False)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.round(5).to_string(index=False))
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
