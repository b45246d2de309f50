"""Does the word sample dominate the absorption verdict's MDE? (issue 23)

    python scripts/absorption_power.py [--profile local] [--runs stage5_clustering topk]
                                       [--seeds 42 43 44] [--halves 12]

1. The profile's absorption data (its `absorption_vocab_size` words; model side, read from the
   profile's `eval_cache/` when there) and the verdict pair's SAEs (`--runs` x `--seeds`, exports
   under the profile's `saes/`).
2. The verdict: every SAE scored on all the words (as notebook 08 scores it).
3. `--halves` half-samples (`analysis.absorption_power.stratified_half`: a random half of every
   letter's train and test words): ground-truth probe refitted on the half, every SAE scored.
4. Per absorption measure, `analysis.absorption_power.decompose`: the verdict's seed spread, its
   word x seed part, the shared word part, the MDE without word noise, and the vocabulary size
   at which the words' part falls to a half / a fifth (extrapolated: word variance ~ 1/n - 1/N).

No model work beyond the profile's own absorption data. Scores already measured are kept
(`<profile output>/results/absorption_power_scores.csv`: a later call with more `--halves` adds
to them; half j is drawn from (`--rng-seed`, j)). Writes the decomposition to
`figures/absorption_power_<profile>.csv` (both files atomically) and prints it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from hsae_utils.analysis.absorption_power import decompose, stratified_half  # noqa: E402
from hsae_utils.analysis.report.tables import FIGURES_DIR  # noqa: E402
from hsae_utils.analysis.stats import paired_stats  # noqa: E402
from hsae_utils.config import get_profile  # noqa: E402
from hsae_utils.data.activations import ActivationStore  # noqa: E402
from hsae_utils.data.model import load_model, model_fingerprint  # noqa: E402
from hsae_utils.evals import absorption as ab  # noqa: E402
from hsae_utils.evals.loading import find_saes, load_adapter  # noqa: E402
from hsae_utils.evals.run import eval_cache_root  # noqa: E402
from hsae_utils.io import atomic_path  # noqa: E402

MEASURES = ("mean_full_absorption_score", "mean_absorption_fraction_score")


def half_data(data: ab.AbsorptionData, rng) -> ab.AbsorptionData:
    """A random half of every letter's train and test words, ground-truth probe refitted."""
    tr, te = stratified_half(data.y_train_N.numpy(), data.y_test_N.numpy(), rng)
    return ab.AbsorptionData.from_arrays(
        data.x_train_ND.numpy()[tr],
        data.y_train_N.numpy()[tr],
        data.x_test_ND.numpy()[te],
        data.y_test_N.numpy()[te],
        min_letters=data.min_letters,
    )


def score_all(adapters: dict, data: ab.AbsorptionData, seed: int, **tags) -> list[dict]:
    rows = []
    for (config, s), adapter in adapters.items():
        t = time.perf_counter()
        summary, _ = ab.evaluate_absorption(adapter, data, seed=seed)
        sec = time.perf_counter() - t
        rows += [
            {**tags, "config": config, "seed": s, "metric": m, "value": summary[m], "seconds": sec}
            for m in (*MEASURES, "absorption_n_letters")
        ]
    return rows


def write_csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def summarize(scores: pd.DataFrame, a: str, b: str, n_words: int, n_full: int) -> pd.DataFrame:
    """Per measure: the verdict's paired test on all the words and its decomposition."""
    out = []
    for metric in MEASURES:
        s = scores[scores.metric == metric].pivot_table(
            index=["sample", "repeat", "seed"], columns="config", values="value"
        )
        d = (s[a] - s[b]).rename("d").reset_index()
        full = s.loc["all"].sort_index(level="seed")
        st = paired_stats(full[a].to_numpy(), full[b].to_numpy())
        halves = d[d["sample"] == "half"].pivot(index="seed", columns="repeat", values="d")
        halves = halves.dropna(axis=1).sort_index()
        d_actual = (full[a] - full[b]).to_numpy()
        out.append(
            {
                "metric": metric,
                "mean_a": st["mean_a"],
                "mean_b": st["mean_b"],
                "p_value": st["p_value"],
                **decompose(d_actual, halves.to_numpy(), n_words, n_full),
            }
        )
    return pd.DataFrame(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="local")
    ap.add_argument("--runs", nargs=2, default=["stage5_clustering", "topk"], metavar=("A", "B"))
    ap.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
    ap.add_argument("--halves", type=int, default=12, help="half-samples (in all)")
    ap.add_argument("--rng-seed", type=int, default=0)
    ap.add_argument(
        "--out", type=Path, default=None, help="default: figures/absorption_power_<profile>.csv"
    )
    args = ap.parse_args(argv)
    if args.halves < 2:
        raise SystemExit(f"--halves {args.halves}: the decomposition needs at least 2.")
    P = get_profile(args.profile)
    scores_path = P.results_dir / "absorption_power_scores.csv"
    n_sae = len(args.runs) * len(args.seeds) * (len(MEASURES) + 1)
    old = pd.read_csv(scores_path) if scores_path.is_file() else pd.DataFrame()
    done = (
        set() if old.empty else {k for k, g in old.groupby(["sample", "repeat"]) if len(g) == n_sae}
    )
    rows = (
        []
        if old.empty
        else old[[k in done for k in zip(old["sample"], old["repeat"])]].to_dict("records")
    )

    t0 = time.perf_counter()
    model = load_model(P, device="cpu")
    data = ab.build_absorption_data(
        model, P, cache_root=eval_cache_root(P), fingerprint=model_fingerprint(P)
    )
    del model
    meta = json.loads((data.folder / "manifest.json").read_text())["meta"]
    n_words, n_full = len(data.words_train) + len(data.words_test), meta["n_vocab_alphabetic"]
    print(
        f"absorption data ({'reused' if data.reused else 'built'}, {time.perf_counter() - t0:.0f}"
        f" s): {n_words} of {n_full} alphabetic words",
        flush=True,
    )
    valid = ActivationStore(P.cache_dir / "validation", cache_dtype=P.cache_dtype)
    wanted = {(c, s) for c in args.runs for s in args.seeds}
    adapters = {
        (r.config, r.seed): load_adapter(r, "cpu", P, valid.manifest["normalization"])
        for r in find_saes(P.sae_dir)
        if (r.config, r.seed) in wanted
    }
    missing = sorted(wanted - set(adapters))
    if missing:
        raise SystemExit(f"SAE exports missing under {P.sae_dir}: {missing}; train them first.")

    def save():
        write_csv(pd.DataFrame(rows), scores_path)

    if ("all", -1) not in done:
        t = time.perf_counter()
        rows += score_all(adapters, data, P.eval_seed, sample="all", repeat=-1)
        save()
        print(f"scored all {n_words} words: {time.perf_counter() - t:.0f} s", flush=True)
    for j in range(args.halves):
        if ("half", j) in done:
            continue
        t = time.perf_counter()
        half = half_data(data, np.random.default_rng([args.rng_seed, j]))
        rows += score_all(adapters, half, P.eval_seed, sample="half", repeat=j)
        save()
        print(f"half-sample #{j}: {time.perf_counter() - t:.1f} s", flush=True)

    summary = summarize(pd.DataFrame(rows), *args.runs, n_words, n_full)
    path = args.out or FIGURES_DIR / f"absorption_power_{P.name}.csv"
    write_csv(summary, path)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(summary.set_index("metric").T.to_string())
    print(f"wrote {path} and {scores_path} ({time.perf_counter() - t0:.0f} s in all)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
