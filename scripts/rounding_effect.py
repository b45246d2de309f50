"""What a float-rounding difference grows into, per architecture (the reproducibility tolerance
across machines of the same kind):

    python scripts/rounding_effect.py [--profile local] [--runs topk batchtopk relu_l1 stage5_clustering]
                                      [--seeds 42] [--steps N] [--threads 2]

For each seed every run is trained three times from one seed on the profile's cache: as is with
`--threads` torch threads (the reference), on the training rows nudged by one unit in the last
place (`rounding.nudge_ulp`: what another BLAS kernel can do to a matmul), and as is with one
thread (another split of the work). Each is compared with the reference (`rounding.divergence`:
weights, firing decisions, MSE) and evaluated on the validation split (explained variance, L0,
dead latents). Writes `figures/rounding_effect_<profile>.csv` (atomically) and prints the table.
Needs the profile's activation cache (notebook 01).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from hsae_utils.analysis.report.tables import FIGURES_DIR  # noqa: E402
from hsae_utils.config import get_profile  # noqa: E402
from hsae_utils.data.activations import ActivationStore  # noqa: E402
from hsae_utils.evals.adapter import SAEAdapter  # noqa: E402
from hsae_utils.evals.core import reconstruction_metrics  # noqa: E402
from hsae_utils.experiment.ground_truth.data import TensorStore  # noqa: E402  (an in-memory store)
from hsae_utils.experiment.rounding import divergence, nudge_ulp  # noqa: E402
from hsae_utils.io import atomic_path  # noqa: E402
from hsae_utils.method.saes import ARCHITECTURES, config_from_profile  # noqa: E402
from hsae_utils.method.train import TrainConfig  # noqa: E402
from hsae_utils.method.train_many import TrainJob, train_many  # noqa: E402
from hsae_utils.runs import get_run  # noqa: E402

CONDITIONS = ("reference", "input nudged 1 ulp", "1 thread")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="local")
    ap.add_argument(
        "--runs", nargs="+", default=["topk", "batchtopk", "relu_l1", "stage5_clustering"]
    )
    ap.add_argument("--seeds", nargs="+", type=int, default=[42])
    ap.add_argument("--steps", type=int, default=None, help="default: the profile's")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args(argv)
    P = get_profile(args.profile)
    train_store = ActivationStore(P.cache_dir / "train", cache_dtype=P.cache_dtype)
    valid = ActivationStore(P.cache_dir / "validation", cache_dtype=P.cache_dtype)
    norm = train_store.normalizer
    x_train = norm(train_store.read_all())  # the trainer's input: normalized rows
    x_valid_raw = valid.read_all()
    x_valid = norm(x_valid_raw)
    data = {
        "reference": x_train,
        "input nudged 1 ulp": nudge_ulp(x_train, seed=0),
        "1 thread": x_train,
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            cfg = TrainConfig.from_profile(P, seed, **({"steps": args.steps} if args.steps else {}))
            trained = {}
            for cond in CONDITIONS:
                torch.set_num_threads(1 if cond == "1 thread" else args.threads)
                jobs = []
                for name in args.runs:
                    spec = get_run(name, P)
                    sae = ARCHITECTURES[spec.arch](
                        config_from_profile(spec.arch, P, **spec.overrides), seed=seed
                    )
                    jobs.append(TrainJob(sae, cfg, Path(tmp) / f"{seed}-{cond}-{name}"))
                t0 = time.perf_counter()
                results = train_many(jobs, TensorStore(data[cond], norm), progress=False)
                print(f"seed {seed}, {cond}: {time.perf_counter() - t0:.0f} s", flush=True)
                trained[cond] = dict(zip(args.runs, (r.sae for r in results)))
            torch.set_num_threads(args.threads)
            for cond in CONDITIONS:
                for name in args.runs:
                    sae, ref = trained[cond][name], trained["reference"][name]
                    m = reconstruction_metrics(SAEAdapter(sae), x_valid_raw)
                    rows.append(
                        {
                            "seed": seed,
                            "steps": cfg.steps,
                            "run": name,
                            "condition": cond,
                            "explained_variance": m["explained_variance_legacy"],
                            "l0": m["l0"],
                            "dead": m["dead"],
                            **divergence(ref, sae, x_valid),
                        }
                    )
    table = pd.DataFrame(rows)
    ref = table[table.condition == "reference"].set_index(["seed", "run"])
    for col in ("explained_variance", "l0", "dead"):
        table[f"{col}_minus_reference"] = (
            table[col] - pd.Series(list(zip(table["seed"], table["run"]))).map(ref[col]).to_numpy()
        )
    out = FIGURES_DIR / f"rounding_effect_{P.name}.csv"
    with atomic_path(out) as path:
        table.to_csv(path, index=False)
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
