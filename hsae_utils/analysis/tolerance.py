"""The cross-machine tolerance and the verdicts it can flip.

Another CPU rounds the same computation differently in the last bits (another BLAS kernel or
instruction set), and training carries such a difference to the end. `scripts/rounding_effect.py`
trains every paper configuration on every seed on inputs nudged by one ulp
(`experiment.rounding.NudgedStore`), evaluates them like notebook 08 and writes the change of
every metric against the profile's own runs (`delta_table`: figures/rounding_effect_<profile>.csv).
The tolerance of a family and metric is the largest |change| over its runs and seeds
(`tolerance_from_deltas`: figures/tolerance_<profile>.csv): what another machine's rounding was
seen to do, not a bound proven for every machine.

A verdict is *fragile* when moving the compared values within the tolerance flips it
(`mark_fragile`). Worst case toward the threshold, two scenarios per claim: every seed of the
claim's configuration moved by its family's tolerance in the claimed direction and every other
configuration (the baseline, the sweep runs of the matched-L0 frontier) against it, with L0 moved
the way that favours the configuration (its own down, the others' up); then all reversed. Each
verdict (relative, matched L0, absolute) is recomputed (`claims.claims_table`) in both; a change
in either makes it fragile. A uniform shift moves the paired mean and keeps the seeds' spread;
shifts that differ per seed are not tried.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from hsae_utils.analysis import claims as cl
from hsae_utils.analysis.paper_claims import CLAIMS, NOT_MEASURED, Claim
from hsae_utils.analysis.report.tables import fmt_number
from hsae_utils.runs import family

# Families as the tolerance groups them: TopK and BatchTopK share the discontinuous selection.
TOLERANCE_FAMILIES = {
    "topk": "TopK/BatchTopK",
    "batchtopk": "TopK/BatchTopK",
    "relu_l1": "L1",
    "hierarchical": "HierarchicalSAE",
}
DELTA_COLUMNS = ["seed", "steps", "run", "family", "metric", "reference", "nudged", "delta"]
TOLERANCE_COLUMNS = [
    "profile",
    "steps",
    "family",
    "metric",
    "runs",
    "seeds",
    "n",
    "max_abs_delta",
    "max_rel_delta",
    "seed_std",
]
KINDS = {"verdict": "verdict", "matched_l0": "at matched L0", "absolute": "absolute"}
FRAGILE, ROBUST = "fragile", "robust"
NOT_MEASURED_NOTE = "tolerance not measured for this profile"


def tolerance_family(config: str) -> str:
    """The tolerance's family of a configuration (sweep runs and stages included)."""
    fam = family(config)
    if fam not in TOLERANCE_FAMILIES:
        raise ValueError(
            f"No tolerance family for configuration {config!r} (family {fam!r}); known: "
            f"{', '.join(TOLERANCE_FAMILIES)}."
        )
    return TOLERANCE_FAMILIES[fam]


def tolerance_path(out_dir: str | Path, profile_name: str) -> Path:
    return Path(out_dir) / f"tolerance_{profile_name}.csv"


# ============================================================================================
# The measurement
# ============================================================================================
def _by_key(tidy: pd.DataFrame) -> pd.Series:
    df = tidy.assign(seed=pd.to_numeric(tidy["seed"], errors="coerce").astype("Int64"))
    return df.groupby(["config", "seed", "metric"])["value"].mean()


def delta_table(reference: pd.DataFrame, nudged: pd.DataFrame, steps: int) -> pd.DataFrame:
    """Per (run, seed, metric) present in both tidy tables (run, config, seed, metric, value):
    the reference's value, the nudged run's and their difference (nudged - reference)."""
    ref, new = _by_key(reference), _by_key(nudged)
    both = new.index.intersection(ref.index)
    if both.empty:
        raise ValueError(
            "No (config, seed, metric) is in both the reference and the nudged results: evaluate "
            "the nudged runs under the reference runs' configuration names and seeds."
        )
    out = pd.DataFrame({"reference": ref[both], "nudged": new[both]}).reset_index()
    out = out.rename(columns={"config": "run"})
    out["delta"] = out["nudged"] - out["reference"]
    out["steps"] = steps
    out["family"] = out["run"].map(tolerance_family)
    return out[DELTA_COLUMNS].sort_values(["run", "seed", "metric"], ignore_index=True)


def tolerance_from_deltas(
    deltas: pd.DataFrame, profile_name: str, reference: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Per family and metric: its runs, seeds and n (runs x seeds), the largest |delta| (the
    tolerance), the largest
    |delta| / |reference| (NaN where every reference is 0), and, from `reference` (the tidy
    reference results) when given, the largest std over seeds of one run (the seed spread)."""
    d = deltas.assign(
        abs_delta=deltas["delta"].abs(),
        rel=(deltas["delta"] / deltas["reference"].abs()).where(deltas["reference"] != 0).abs(),
    )
    steps = d["steps"].unique()
    if len(steps) != 1:
        raise ValueError(f"The deltas mix training budgets {sorted(steps)}: one budget per file.")
    g = d.groupby(["family", "metric"])
    out = pd.DataFrame(
        {
            "runs": g["run"].nunique(),
            "seeds": g["seed"].nunique(),
            "n": g.size(),
            "max_abs_delta": g["abs_delta"].max(),
            "max_rel_delta": g["rel"].max(),
        }
    ).reset_index()
    if reference is not None:
        ref = reference[reference["config"].isin(set(deltas["run"]))]
        std = ref.groupby(["config", "metric"])["value"].std(ddof=1).rename("seed_std")
        std = std.reset_index().assign(family=lambda x: x["config"].map(tolerance_family))
        spread = std.groupby(["family", "metric"])["seed_std"].max()
        out["seed_std"] = [spread.get((f, m), math.nan) for f, m in zip(out.family, out.metric)]
    else:
        out["seed_std"] = math.nan
    out.insert(0, "steps", int(steps[0]))
    out.insert(0, "profile", profile_name)
    return out[TOLERANCE_COLUMNS]


def load_tolerance(profile, out_dir: str | Path) -> tuple[pd.DataFrame | None, str]:
    """The profile's tolerance table from `out_dir`, with a note; (None, why) when there is none
    or it was measured at another training budget than the profile's."""
    path = tolerance_path(out_dir, profile.name)
    if not path.is_file():
        return None, f"{NOT_MEASURED_NOTE} (no {path.name}: scripts/rounding_effect.py)"
    tol = pd.read_csv(path)
    missing = set(TOLERANCE_COLUMNS) - set(tol.columns)
    if missing:
        raise ValueError(
            f"{path} lacks columns {sorted(missing)}: rewrite it with scripts/rounding_effect.py."
        )
    steps = set(tol["steps"])
    if steps != {profile.train_steps}:
        return None, (
            f"{NOT_MEASURED_NOTE} at its budget ({path.name} was measured at "
            f"{', '.join(map(str, sorted(steps)))} steps, the profile trains "
            f"{profile.train_steps}: rerun scripts/rounding_effect.py)"
        )
    return tol, f"measured in {path.name}"


# ============================================================================================
# Fragile verdicts
# ============================================================================================
def _lookup(tol: pd.DataFrame) -> dict[tuple[str, str], float]:
    return {(f, m): float(v) for f, m, v in zip(tol.family, tol.metric, tol.max_abs_delta)}


def perturbed(
    results: pd.DataFrame,
    claim: Claim,
    metric: str,
    tol: dict[tuple[str, str], float],
    favour: bool,
) -> pd.DataFrame:
    """The tidy results with the claim's metric (and L0) moved within the tolerance: the claim's
    configuration toward its claimed direction and every other configuration against it when
    `favour`, the reverse otherwise (see the module docstring). Families or metrics without a
    tolerance stay put."""
    out = results.copy()
    sign = (1 if claim.direction == "higher" else -1) * (1 if favour else -1)
    ours = (out["config"] == claim.config).to_numpy()
    fams = out["config"].map(lambda c: TOLERANCE_FAMILIES.get(family(c), "")).to_numpy()
    values = out["value"].astype(float).to_numpy().copy()
    moves = [(metric, sign)] + ([("l0", -1 if favour else 1)] if metric != "l0" else [])
    for m, s in moves:
        rows = (out["metric"] == m).to_numpy()
        step = np.array([tol.get((f, m), 0.0) for f in fams])
        values[rows & ours] += s * step[rows & ours]
        values[rows & ~ours] -= s * step[rows & ~ours]
    out["value"] = values
    return out


def _claim_verdicts(results: pd.DataFrame, profile, claim: Claim) -> dict[str, str]:
    row = cl.claims_table(results, profile, [claim]).iloc[0]
    return {k: row[k] for k in KINDS}


def mark_fragile(
    table: pd.DataFrame,
    results: pd.DataFrame,
    profile,
    tolerance: pd.DataFrame | None,
    note: str = "",
    claims=CLAIMS,
) -> pd.DataFrame:
    """`table` (claims.claims_table's, on `results`) with columns `fragile` (fragile, robust or
    '' where there is no verdict to move) and `fragile_reason`; without a tolerance every row says
    it was not measured (`note`). `table.attrs["fragile_note"]` is the sentence for the
    markdown."""
    table = table.copy()
    by_id = {c.id: c for c in claims}
    marks, reasons = [], []
    tol = _lookup(tolerance) if tolerance is not None else None
    for _, row in table.iterrows():
        c, metric = by_id.get(row["id"]), row["metric"]
        # every kind, "not comparable" too: moving L0 can bring a baseline to the config's L0
        decided = {k: row[k] for k in KINDS}
        if c is None or metric not in set(results["metric"]):
            marks.append("")
            reasons.append("" if tol is not None else NOT_MEASURED_NOTE)
            continue
        if tol is None:
            marks.append(NOT_MEASURED)
            reasons.append(NOT_MEASURED_NOTE)
            continue
        fams = {tolerance_family(x) for x in (c.config, c.baseline)}
        lacking = [f for f in sorted(fams) if (f, metric) not in tol]
        if lacking:
            marks.append(NOT_MEASURED)
            reasons.append(f"no tolerance for {metric} of {', '.join(lacking)}")
            continue
        flips = []
        for favour in (True, False):
            moved = _claim_verdicts(perturbed(results, c, metric, tol, favour), profile, c)
            flips += [
                f"{KINDS[k]}: {v} -> {moved[k]} ({c.config} moved "
                f"{'toward' if favour else 'against'} the claim)"
                for k, v in decided.items()
                if moved[k] != v
            ]
        shift = ", ".join(
            f"{f} {fmt_number(tol[(f, metric)])}" for f in sorted(fams, key=str.lower)
        )
        marks.append(FRAGILE if flips else ROBUST)
        reasons.append(
            ("; ".join(flips) if flips else "no verdict changes")
            + f" within the tolerance ({metric}: {shift})"
        )
    table["fragile"], table["fragile_reason"] = marks, reasons
    table.attrs["fragile_note"] = fragile_note(table, tolerance, note)
    return table


def fragile_note(table: pd.DataFrame, tolerance: pd.DataFrame | None, note: str = "") -> str:
    """The markdown's sentence on the tolerance and the fragile verdicts."""
    if tolerance is None:
        return f"*fragile*: {note or NOT_MEASURED_NOTE}."
    fragile = table.loc[table["fragile"] == FRAGILE, "id"].tolist()
    steps, seeds = int(tolerance["steps"].iloc[0]), int(tolerance["seeds"].max())
    return (
        "*fragile*: a verdict that the cross-machine tolerance can flip (each compared value "
        "moved by its family's largest change under a one-ulp input nudge of the training "
        f"batches, every paper configuration on {seeds} seed{'s' if seeds > 1 else ''} at "
        f"{steps} steps, {note or 'scripts/rounding_effect.py'}; "
        "worst case toward the threshold, docs/reproducibility.md): "
        + (", ".join(f"`{i}`" for i in fragile) if fragile else "none")
        + "."
    )
