"""What a float-rounding difference grows into, per configuration: the reproducibility tolerance
across machines.

    python scripts/rounding_effect.py [--profile local] [--runs RUN ...] [--seeds N ...]
                                      [--check-reference RUN ...]
    python scripts/rounding_effect.py --quick [--profile local] [--runs ...] [--seeds 42]
                                      [--steps N] [--threads 2]

Default, the tolerance: every paper configuration (`runs.PAPER_RUNS`) on every seed of the
profile is trained on the cache's own batches nudged by one unit in the last place
(`rounding.NudgedStore`: what another BLAS kernel can do to the normalization; `train_many`, one
pass per seed) into `<output_dir>/rounding/<run>/seed<N>` (a finished run is reused), evaluated as
notebook 08 evaluates (`evals.run.evaluate_profile`, the profile's eval_cache) into
`results/rounding_evaluation.csv`, and compared with the profile's own runs (`saes/` and notebook
08's `results/evaluation.csv`). Writes, atomically, every metric's change per run, seed and metric
(with the weight and firing divergence, `rounding.divergence`, as `divergence:*` rows) to
`figures/rounding_effect_<profile>.csv`, and the tolerance per family and metric
(`analysis.tolerance`) to `figures/tolerance_<profile>.csv`, which the claims table reads.
`--check-reference RUN ...` first retrains those runs un-nudged on the first seed and stops unless
they equal the saved runs bit for bit, and evaluates the saved ones again beside the nudged runs
(the difference from evaluation.csv is printed; `--check-evaluation RUN ...`: that part alone):
else the deltas would mix in another difference.

`--quick`, a cheap check at a short budget: every run trained three times here on the
in-memory cache, as is with `--threads` torch threads (the reference), on the rows nudged by one
ulp, and as is with one thread; compared with the reference (weights, firing decisions, MSE) and
its reconstruction on the validation split. Writes `figures/rounding_effect_<profile>_quick.csv`.
Both need the profile's activation cache (notebook 01); the default also notebook 08's results.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from hsae_utils.analysis.report.tables import FIGURES_DIR  # noqa: E402
from hsae_utils.analysis.tolerance import (  # noqa: E402
    delta_table,
    tolerance_family,
    tolerance_from_deltas,
    tolerance_path,
)
from hsae_utils.config import get_profile  # noqa: E402
from hsae_utils.data.activations import ActivationStore  # noqa: E402
from hsae_utils.evals.adapter import SAEAdapter  # noqa: E402
from hsae_utils.evals.core import reconstruction_metrics  # noqa: E402
from hsae_utils.experiment.ground_truth.data import TensorStore  # noqa: E402  (an in-memory store)
from hsae_utils.experiment.paper_runs import is_finished  # noqa: E402
from hsae_utils.experiment.rounding import NudgedStore, divergence, nudge_ulp  # noqa: E402
from hsae_utils.io import atomic_path  # noqa: E402
from hsae_utils.method.checkpoint import load_sae, set_aside_stale  # noqa: E402
from hsae_utils.method.saes import ARCHITECTURES, config_from_profile  # noqa: E402
from hsae_utils.method.train import TrainConfig  # noqa: E402
from hsae_utils.method.train_many import TrainJob, train_many  # noqa: E402
from hsae_utils.runs import PAPER_RUNS, get_run, run_dir  # noqa: E402

CONDITIONS = ("reference", "input nudged 1 ulp", "1 thread")  # --quick
QUICK_RUNS = ("topk", "batchtopk", "relu_l1", "stage5_clustering")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="local")
    ap.add_argument("--quick", action="store_true", help="the cheap check (see the docstring)")
    ap.add_argument("--runs", nargs="+", default=None, help="default: every paper run (--quick: 4)")
    ap.add_argument("--seeds", nargs="+", type=int, default=None, help="default: the profile's")
    ap.add_argument("--steps", type=int, default=None, help="--quick only; default: the profile's")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--check-reference", nargs="*", default=[], metavar="RUN")
    ap.add_argument(
        "--check-evaluation", nargs="*", default=[], metavar="RUN", help="re-evaluation only"
    )
    args = ap.parse_args(argv)
    P = get_profile(args.profile)
    if args.quick:
        args.runs, args.seeds = args.runs or list(QUICK_RUNS), args.seeds or [42]
        return quick(P, args)
    if args.steps is not None:
        ap.error("--steps applies to --quick only: the tolerance pairs with the profile's runs.")
    return against_saved(P, args.runs or list(PAPER_RUNS), args.seeds or list(P.seeds), args)


def quick(P, args) -> int:
    """The cheap check (see the module docstring)."""
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
    out = FIGURES_DIR / f"rounding_effect_{P.name}_quick.csv"
    with atomic_path(out) as path:
        table.to_csv(path, index=False)
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print(f"-> {out}")
    return 0


def _job(P, name: str, seed: int, folder: Path) -> TrainJob:
    """The run as `paper_runs.train_runs` builds it (same config and seed), into `folder`."""
    spec = get_run(name, P)
    sae = ARCHITECTURES[spec.arch](config_from_profile(spec.arch, P, **spec.overrides), seed=seed)
    meta = {"profile": P.name, "run": name, "label": spec.label, "seed": seed}
    return TrainJob(sae, TrainConfig.from_profile(P, seed), folder, meta)


def check_reference(P, names: list[str], seed: int, store) -> None:
    """Retrain `names` un-nudged on `seed` (one pass) and stop unless each equals the saved run."""
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [_job(P, n, seed, Path(tmp) / n) for n in names]
        t0 = time.perf_counter()
        results = train_many(jobs, store, progress=False)
        print(f"reference check, seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
        for name, res in zip(names, results):
            saved = load_sae(run_dir(P, name, seed)).state_dict()
            for key, value in res.sae.state_dict().items():
                if not torch.equal(value, saved[key]):
                    raise SystemExit(
                        f"{name} seed {seed} retrained here differs from the saved run in {key}: "
                        "the saved runs are not what this machine trains; retrain them "
                        "(notebook 02) before measuring the tolerance against them."
                    )
            print(f"  {name}: bit-identical to {run_dir(P, name, seed)}", flush=True)


def against_saved(P, names: list[str], seeds: list[int], args) -> int:
    """The tolerance measurement (the default; see the module docstring)."""
    from hsae_utils.evals.loading import export_run
    from hsae_utils.evals.run import evaluate_profile

    reference_csv = P.results_dir / "evaluation.csv"
    if not reference_csv.is_file():
        raise SystemExit(f"No {reference_csv}: run notebooks 02 and 08 for profile {P.name} first.")
    reference = pd.read_csv(reference_csv)
    torch.set_num_threads(args.threads)
    store = ActivationStore(P.cache_dir / "train", cache_dtype=P.cache_dtype)
    if args.check_reference:
        check_reference(P, args.check_reference, seeds[0], store)
    root = P.output_dir / "rounding"  # beside saes/: notebook 08 never sees these runs
    folders = {(n, s): root / n / f"seed{s}" for n in names for s in seeds}
    for folder in folders.values():  # another trainer revision: kept under rounding.rev<N>/
        set_aside_stale(folder, root)
    steps = TrainConfig.from_profile(P, seeds[0]).steps
    trained = set()  # runs (re)trained now: their earlier evaluation rows, if any, are stale
    for seed in seeds:
        todo = [n for n in names if not is_finished(folders[n, seed], steps)]
        trained |= {(n, seed) for n in todo}
        jobs = [_job(P, n, seed, folders[n, seed]) for n in todo]
        if jobs:
            t0 = time.perf_counter()
            train_many(jobs, NudgedStore(store), progress=False)
            print(f"seed {seed}: {len(jobs)} nudged runs in {time.perf_counter() - t0:.0f} s")
    out_eval = P.results_dir / "rounding_evaluation.csv"  # every nudged run evaluated so far
    nudged = pd.read_csv(out_eval) if out_eval.is_file() else None
    have = set() if nudged is None else set(zip(nudged["config"], nudged["seed"]))
    missing = [key for key in folders if key not in have or key in trained]
    checked = list(dict.fromkeys(args.check_reference + args.check_evaluation))
    if missing or checked:
        runs = [export_run(folders[key], root) for key in missing]
        controls = [  # the saved runs again, renamed so they never mix with the nudged ones
            dataclasses.replace(
                export_run(run_dir(P, n, seeds[0]), P.sae_dir),
                run=f"reference/{n}/seed{seeds[0]}",
                config=f"{n}__reference",
            )
            for n in checked
        ]
        t0 = time.perf_counter()
        result = evaluate_profile(P, runs + controls, progress=False)
        print(f"evaluation: {len(runs + controls)} SAEs in {time.perf_counter() - t0:.0f} s")
        new = result.results
        if nudged is not None:  # keep the earlier runs' rows, replace what was evaluated again
            again = set(zip(new["config"], new["seed"]))
            keep = [k not in again for k in zip(nudged["config"], nudged["seed"])]
            new = pd.concat([nudged[keep], new], ignore_index=True)
        nudged = new
        P.results_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(out_eval) as tmp:
            nudged.to_csv(tmp, index=False)
        for n in checked:
            again = nudged[nudged["config"] == f"{n}__reference"].set_index("metric")["value"]
            saved = reference[(reference["config"] == n) & (reference["seed"] == seeds[0])]
            gap = (again - saved.set_index("metric")["value"]).abs().max()
            print(
                f"  {n} seed {seeds[0]} evaluated again: largest |diff| from evaluation.csv {gap:.3g}"
            )
    nudged = nudged[nudged["config"].isin(names) & nudged["seed"].isin(seeds)]
    reference = reference[reference["config"].isin(names)]  # every seed: the seeds' spread
    deltas = delta_table(reference[reference["seed"].isin(seeds)], nudged, steps)
    valid = ActivationStore(P.cache_dir / "validation", cache_dtype=P.cache_dtype)
    x_valid = valid.normalizer(valid.read_all())
    rows = []
    for (n, s), folder in folders.items():  # weights and firing: how far apart the runs ended
        div = divergence(load_sae(run_dir(P, n, s)), load_sae(folder), x_valid)
        rows += [
            {
                "seed": s,
                "steps": steps,
                "run": n,
                "metric": f"divergence:{k}",
                "reference": 0.0,
                "nudged": v,
                "delta": v,
            }
            for k, v in div.items()
        ]
    div_rows = pd.DataFrame(rows).assign(family=lambda d: d["run"].map(tolerance_family))
    deltas = pd.concat([deltas, div_rows[deltas.columns]], ignore_index=True)
    tolerance = tolerance_from_deltas(deltas, P.name, reference)
    out = FIGURES_DIR / f"rounding_effect_{P.name}.csv"
    with atomic_path(out) as tmp:
        deltas.to_csv(tmp, index=False)
    with atomic_path(tolerance_path(FIGURES_DIR, P.name)) as tmp:
        tolerance.to_csv(tmp, index=False)
    shown = tolerance[
        ~tolerance["metric"].str.contains(":") | tolerance["metric"].str.startswith("divergence")
    ]
    with pd.option_context("display.width", 250, "display.max_rows", 500):
        print(shown.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print(f"-> {out}\n-> {tolerance_path(FIGURES_DIR, P.name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
