"""The sensitivity study of notebook 11: each alternative of `readings.READINGS` trained at the
profile's budget on one seed, evaluated like notebook 08, and the claims table's verdicts
recomputed with those runs in place of the default runs they replace.

Which runs an alternative retrains (`Alternative.runs`), and which verdicts it can change:
- "train" (the optimizer) and "store" (input centering) readings change every configuration. We
  retrain TopK and the HierarchicalSAE (stage 5), the pair the headline claims compare; claims on
  the other stages are "not retrained" under them, and the matched-L0 verdict is not recomputed
  (its sweep baselines were not retrained).
- "sae" readings are fields of the HierarchicalSAE, retrained at stage 5. A stage whose mechanism
  is off never reads the field (`MECHANISM`): its claims are "unaffected"; an earlier stage that
  reads it was not retrained: "not retrained".
- Input centering ("store") is applied at read time: the cache holds raw activations and
  `ActivationStore` normalizes each batch, so the centered runs read the same cache through a
  `Normalizer(center=True)` fitted on the same first tokens; no second cache.

Seeds: the default runs have the profile's seeds, an alternative only the first (42). Two like-
with-like comparisons of each recomputed verdict:
- seed 42 alone: the claims table on seed 42's runs only, default against alternative (one seed:
  the verdict is the sign of the paired difference, `claims.relative_verdict`);
- every seed, shifted: each default seed of a retrained configuration moved by the change the
  alternative made at seed 42 (metric by metric), so the verdict keeps the table's test, seed
  noise and power; it assumes the reading moves every seed as it moved seed 42.
A verdict "changes" under an alternative when either comparison changes it; the table says which.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from hsae_utils.analysis import claims as cl
from hsae_utils.analysis.paper_claims import CLAIMS
from hsae_utils.analysis.report.tables import fmt_number
from hsae_utils.config import Profile
from hsae_utils.experiment.readings import OPT_IN, READINGS
from hsae_utils.runs import HSAE, RUNS, TOPK, run_dir

# The mechanism that reads each "sae" reading's field (None: every stage reads it).
MECHANISM = {
    "recon_units": "adaptive_sparsity",
    "firing_reading": "window_tracking",
    "merge_similarity": "clustering",
    "merge_reinit": "clustering",
    "lambda0_basis": None,
}
KINDS = {"verdict": "direction", "matched_l0": "matched L0", "absolute": "absolute"}
NOT_RETRAINED, NOT_RECOMPUTED = "not retrained", "not recomputed"  # statuses of a verdict
RESULTS_NAME = "readings.csv"  # under results_dir: one row per alternative, claim and verdict kind
EVALUATION_NAME = "readings_evaluation.csv"  # the alternatives' tidy evaluation table
# Headline metrics of the figure: the claims' metrics, HierarchicalSAE minus TopK.
FIGURE_METRICS = (
    ("explained_variance_legacy", "explained variance"),
    ("l0", "L0"),
    ("kl_div_with_sae", "KL divergence"),
    ("mean_full_absorption_score", "full absorption"),
    ("sae_top_1_test_accuracy", "probing top-1"),
)


@dataclass(frozen=True)
class Alternative:
    """One alternative reading and the runs retrained under it."""

    reading: str
    where: str  # "train" | "sae" | "store" (readings.Reading.where)
    field: str
    value: object
    runs: tuple[str, ...]  # run names of the registry

    @property
    def label(self) -> str:
        value = f"{self.value:.4g}" if isinstance(self.value, float) else str(self.value)
        return f"{self.reading}={value}"

    @property
    def overrides(self) -> dict:
        """The folder key (`runs.run_dir`): the field and its value."""
        return {self.field: self.value}

    def folder(self, profile: Profile, run: str, seed: int) -> Path:
        """`<output_dir>/readings/<run>__<field>-<value>/seed<seed>`: beside `saes/`, not in it,
        so notebook 08 (every SAE under `saes/`) never mixes them into the default results."""
        default = run_dir(profile, run, seed, self.overrides)
        return readings_dir(profile) / default.relative_to(profile.sae_dir)

    def config(self, run: str) -> str:
        return f"{run}__{self.field}-{self.value}"

    def affects(self, run: str) -> bool:
        """Does this reading change run `run` (retrained or not)?"""
        if self.where != "sae":
            return True
        spec = RUNS[run]
        mech = MECHANISM[self.reading]
        return spec.arch == "hierarchical" and (mech is None or bool(spec.overrides.get(mech)))


def readings_dir(profile: Profile) -> Path:
    return profile.output_dir / "readings"


def alternatives(
    profile: Profile | None = None, include: tuple[str, ...] = ()
) -> list[Alternative]:
    """Every alternative of `readings.READINGS`, with the runs retrained under it; the costly
    `readings.OPT_IN` ones (the width) only when named in `include`, and a "profile" alternative
    only where it differs from `profile`'s own value (the width 2,304 is the paper's d_model)."""
    unknown = sorted(set(include) - set(OPT_IN))
    if unknown:
        raise ValueError(f"include={unknown}: only the opt-in readings {OPT_IN} can be included.")
    return [
        Alternative(r.name, r.where, r.field, alt, (HSAE,) if r.where == "sae" else (TOPK, HSAE))
        for r in READINGS
        if r.name not in OPT_IN or r.name in include
        for alt in r.alternatives
        if not (
            r.where == "profile" and profile is not None and _profile_value(profile, r.field) == alt
        )
    ]


def _profile_value(profile: Profile, field: str):
    return profile.dict_size if field == "d_sae" else getattr(profile, field)


def alt_profile(profile: Profile, alt: Alternative) -> Profile:
    """The profile a run of `alt` trains under: the same, or with the "profile" field changed."""
    import dataclasses

    return (
        dataclasses.replace(profile, **{alt.field: alt.value})
        if alt.where == "profile"
        else profile
    )


def seed_of(profile: Profile) -> int:
    """The one seed the alternatives are trained on: the profile's first."""
    return profile.seeds[0]


# ============================================================================================
# Training and evaluation (torch: imported inside)
# ============================================================================================
def centered_store(store):
    """The same cache read through a centered normalizer, fitted on the same first tokens as the
    cache's own (`activations.build_cache`): x_norm = (x - mean) * scale."""
    from hsae_utils.data.activations import Normalizer, _first_rows

    n = int(store.manifest["normalization"].get("n_tokens") or 0)
    sample = _first_rows(store.folder, store.manifest, n) if n else store.read_all()
    out = copy.copy(store)
    out.normalizer = Normalizer.fit(sample, center=True)
    return out


def _job(profile: Profile, alt: Alternative, run: str, seed: int):
    from hsae_utils.method.saes import ARCHITECTURES, config_from_profile
    from hsae_utils.method.train import TrainConfig
    from hsae_utils.method.train_many import TrainJob

    spec = RUNS[run]
    sae_over = {alt.field: alt.value} if alt.where == "sae" else {}
    train_over = {alt.field: alt.value} if alt.where == "train" else {}
    prof = alt_profile(profile, alt)  # the width: d_sae, and k / lambda_0 that follow it
    sae_cfg = config_from_profile(spec.arch, prof, **{**spec.overrides, **sae_over})
    cfg = TrainConfig.from_profile(prof, seed, **train_over)
    return TrainJob(
        ARCHITECTURES[spec.arch](sae_cfg, seed=seed),
        cfg,
        alt.folder(profile, run, seed),
        {
            "profile": profile.name,
            "run": alt.config(run),
            "label": f"{spec.label} [{alt.label}]",
            "seed": seed,
            "overrides": alt.overrides,
            "reading": alt.reading,
        },
    )


def train_alternatives(
    profile: Profile,
    alts: list[Alternative] | None = None,
    force: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """Train every (alternative, run) on the profile's first seed, or reuse a finished one. The
    runs read the cache in one shared pass (`train_many`), the centered ones in a second.
    Returns one row per run: alternative, run, folder, trained (False: reused)."""
    import shutil

    from hsae_utils.data.activations import ActivationStore
    from hsae_utils.experiment.paper_runs import is_finished
    from hsae_utils.method.checkpoint import set_aside_stale
    from hsae_utils.method.train_many import train_many

    alts = alternatives() if alts is None else alts
    seed = seed_of(profile)
    store = ActivationStore(profile.cache_dir / "train", cache_dtype=profile.cache_dtype)
    passes: dict[bool, list] = {False: [], True: []}
    rows = []
    for alt in alts:
        for run in alt.runs:
            job = _job(profile, alt, run, seed)
            folder = Path(job.out_dir)
            set_aside_stale(folder, readings_dir(profile))  # another trainer revision: retrain
            done = is_finished(folder, job.cfg.steps, job.cfg.optimizer)
            if force and folder.exists():
                shutil.rmtree(folder)
            if force or not done:
                passes[alt.where == "store"].append(job)
            rows.append(
                {
                    "alternative": alt.label,
                    "run": run,
                    "config": alt.config(run),
                    "folder": str(folder),
                    "trained": force or not done,
                }
            )
    for centered, jobs in passes.items():
        if jobs:
            train_many(jobs, centered_store(store) if centered else store, progress=progress)
    return pd.DataFrame(rows)


def evaluate_alternatives(
    profile: Profile, alts: list[Alternative] | None = None, progress: bool = True
):
    """Evaluate every alternative's runs as notebook 08 evaluates the default ones (the same
    model-side cache, `evals.evaluate_profile`); writes `results/readings_evaluation.csv`.
    Returns the `EvaluationResult`."""
    from hsae_utils.evals.loading import export_run
    from hsae_utils.evals.run import evaluate_profile
    from hsae_utils.io import atomic_path

    alts = alternatives() if alts is None else alts
    seed = seed_of(profile)
    root = readings_dir(profile)
    runs = [export_run(alt.folder(profile, run, seed), root) for alt in alts for run in alt.runs]
    result = evaluate_profile(profile, runs, progress=progress)
    profile.results_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(profile.results_dir / EVALUATION_NAME) as tmp:
        result.results.to_csv(tmp, index=False)
    return result


def output_problems(profile: Profile) -> list[str]:
    """What notebook 11 leaves on disk that is missing, unfinished or older than notebook 08's
    results (then its verdicts compare against stale default results)."""
    from hsae_utils.experiment.paper_runs import is_finished

    problems = []
    seed = seed_of(profile)
    for alt in alternatives():
        for run in alt.runs:
            folder = alt.folder(profile, run, seed)
            optimizer = [alt.value] if alt.where == "train" else []  # else the default
            if not is_finished(folder, profile.train_steps, *optimizer):
                problems.append(f"{folder} is not a finished run")
    table, evaluation = profile.results_dir / RESULTS_NAME, profile.results_dir / "evaluation.csv"
    if not table.is_file():
        problems.append(f"{table} is missing")
    elif evaluation.is_file() and evaluation.stat().st_mtime > table.stat().st_mtime:
        problems.append(f"{table} is older than {evaluation} (notebook 08 ran again)")
    return problems


# ============================================================================================
# Verdicts with the alternatives substituted (pandas only)
# ============================================================================================
def _seed_rows(tidy: pd.DataFrame, seed: int) -> pd.DataFrame:
    return tidy[pd.to_numeric(tidy["seed"], errors="coerce") == seed]


def _variant_rows(variant: pd.DataFrame, alt: Alternative, run: str) -> pd.DataFrame:
    return variant[variant["config"] == alt.config(run)].assign(config=run)


def substituted(
    default: pd.DataFrame, variant: pd.DataFrame, alt: Alternative, seed: int
) -> pd.DataFrame:
    """Seed `seed`'s default results with the alternative's runs in place of the ones it
    retrained (configuration names as the default's)."""
    base = _seed_rows(default, seed)
    keep = base[~base["config"].isin(alt.runs)]
    return pd.concat(
        [keep] + [_variant_rows(variant, alt, run) for run in alt.runs], ignore_index=True
    )


def shifted(
    default: pd.DataFrame, variant: pd.DataFrame, alt: Alternative, seed: int
) -> pd.DataFrame:
    """Every seed of the default results, each retrained configuration moved metric by metric by
    the alternative's change at `seed` (variant - default there); metrics the alternative lacks
    are dropped for that configuration."""
    parts = [default[~default["config"].isin(alt.runs)]]
    for run in alt.runs:
        at_seed = (
            _seed_rows(default[default["config"] == run], seed).groupby("metric")["value"].mean()
        )
        new = _variant_rows(variant, alt, run).groupby("metric")["value"].mean()
        delta = (new - at_seed).dropna()
        rows = default[(default["config"] == run) & default["metric"].isin(delta.index)].copy()
        rows["value"] = rows["value"].astype(float) + rows["metric"].map(delta)
        parts.append(rows)
    return pd.concat(parts, ignore_index=True)


def _status(alt: Alternative, claim) -> str:
    touched = [r for r in (claim.config, claim.baseline) if alt.affects(r)]
    if not touched:
        return "unaffected"
    return "recomputed" if all(r in alt.runs for r in touched) else NOT_RETRAINED


def compare_verdicts(
    default: pd.DataFrame,
    variant: pd.DataFrame,
    profile,
    alts: list[Alternative] | None = None,
    claims=CLAIMS,
) -> pd.DataFrame:
    """One row per alternative, claim and verdict kind (direction, matched L0, absolute): the
    default's verdict and the alternative's, on every seed (shifted) and on seed 42 alone, and
    whether it changed. `status`: recomputed, unaffected (the reading does not apply to either
    configuration) or not retrained (the reading applies but the run was not retrained)."""
    alts = alternatives() if alts is None else alts
    seed = seed_of(profile)
    table = lambda tidy: cl.claims_table(tidy, profile, claims).set_index("id")  # noqa: E731
    base_all, base_seed = table(default), table(_seed_rows(default, seed))
    n_seeds = int(pd.to_numeric(default["seed"], errors="coerce").nunique())
    rows = []
    for alt in alts:
        evaluated = all((variant["config"] == alt.config(run)).any() for run in alt.runs)
        alt_all = table(shifted(default, variant, alt, seed)) if evaluated else None
        alt_seed = table(substituted(default, variant, alt, seed)) if evaluated else None
        for c in claims:
            status = _status(alt, c) if evaluated else "not evaluated"
            for kind in KINDS:
                kind_status = (
                    f"{NOT_RECOMPUTED} (sweep baselines not retrained)"
                    if status == "recomputed" and kind == "matched_l0" and alt.where != "sae"
                    else status
                )
                row = {
                    "reading": alt.reading,
                    "alternative": alt.label,
                    "where": alt.where,
                    "retrained": ", ".join(alt.runs),
                    "claim": c.id,
                    "kind": kind,
                    "status": kind_status,
                    "seed": seed,
                    "n_seeds_default": n_seeds,
                    "default": base_all.loc[c.id, kind],
                    "default_seed": base_seed.loc[c.id, kind],
                }
                if kind_status == "recomputed":
                    row.update(
                        variant=alt_all.loc[c.id, kind], variant_seed=alt_seed.loc[c.id, kind]
                    )
                else:  # unchanged by construction, or not known
                    same = kind_status == "unaffected"
                    row.update(
                        variant=row["default"] if same else "",
                        variant_seed=row["default_seed"] if same else "",
                    )
                row["changed"] = kind_status == "recomputed" and row["variant"] != row["default"]
                row["changed_seed"] = (
                    kind_status == "recomputed" and row["variant_seed"] != row["default_seed"]
                )
                rows.append(row)
    return pd.DataFrame(rows)


def _change_text(r) -> str:
    parts = []
    if r["changed"]:
        parts.append(
            f"{KINDS[r['kind']]}: {r['default']} -> {r['variant']}"
            + (f" ({int(r['n_seeds_default'])} seeds, shifted)" if r["n_seeds_default"] > 1 else "")
        )
    if r["changed_seed"] and (not r["changed"] or r["n_seeds_default"] > 1):
        parts.append(
            f"{KINDS[r['kind']]} at seed {int(r['seed'])}: {r['default_seed']} -> "
            f"{r['variant_seed']}"
        )
    return "; ".join(parts)


def _not_retrained(g: pd.DataFrame) -> pd.Series:
    """Verdicts the alternative would change but could not recompute (a run it changes was not
    retrained); a verdict that is "not comparable" by default (nothing measured) is left out."""
    return (g["status"] == NOT_RETRAINED) & (g["default"] != cl.NOT_COMPARABLE)


def summary(detail: pd.DataFrame) -> pd.DataFrame:
    """reading -> alternative -> which verdicts change (and which claims were not recomputed)."""
    rows = []
    for (reading, label), g in detail.groupby(["reading", "alternative"], sort=False):
        changed = g[g["changed"] | g["changed_seed"]]
        lines = [f"{r['claim']} ({_change_text(r)})" for _, r in changed.iterrows()]
        skipped = sorted(set(g.loc[_not_retrained(g), "claim"]))
        if g["status"].str.startswith(NOT_RECOMPUTED).any():
            skipped.append("the matched-L0 verdicts (the sweep baselines were not retrained)")
        rows.append(
            {
                "reading": reading,
                "alternative": label.split("=", 1)[1],
                "retrained": g["retrained"].iloc[0],
                "verdicts that change": "; ".join(lines) or "none",
                "not recomputed": ", ".join(skipped),
            }
        )
    return pd.DataFrame(rows)


def sensitivity_column(detail: pd.DataFrame | None) -> dict[str, str]:
    """claim id -> "changes under: ..." or "stable under all N alternatives" (with the
    alternatives under which it was not recomputed), for the claims table."""
    if detail is None or detail.empty:
        return {}
    n_alts = detail["alternative"].nunique()
    out = {}
    for claim, g in detail.groupby("claim", sort=False):
        changed = g[g["changed"] | g["changed_seed"]]
        by_alt = {}
        for _, r in changed.iterrows():
            by_alt.setdefault(r["alternative"], []).append(_change_text(r))
        # a claim on a run the alternative changes but did not retrain (the matched-L0 caveat
        # of the train / store readings concerns every claim: said in the summary)
        skipped = sorted(set(g.loc[_not_retrained(g), "alternative"]))
        if by_alt:
            text = "changes under: " + "; ".join(f"{a} ({'; '.join(t)})" for a, t in by_alt.items())
        else:
            text = (
                f"stable under the {n_alts - len(skipped)} other alternatives"
                if skipped
                else f"stable under all {n_alts} alternatives"
            )
        if skipped:
            text += f" (not recomputed: {', '.join(skipped)})"
        out[claim] = text
    return out


def load_detail(profile) -> pd.DataFrame | None:
    """Notebook 11's table `results/readings.csv`, or None when it has not run."""
    path = profile.results_dir / RESULTS_NAME
    return pd.read_csv(path, keep_default_na=False) if path.exists() else None


def save_detail(detail: pd.DataFrame, profile) -> Path:
    from hsae_utils.io import atomic_path

    path = profile.results_dir / RESULTS_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        detail.to_csv(tmp, index=False)
    return path


# ============================================================================================
# The effect on the headline differences, and the figure
# ============================================================================================
def metric_effects(
    default: pd.DataFrame,
    variant: pd.DataFrame,
    profile,
    alts: list[Alternative] | None = None,
    metrics=tuple(m for m, _ in FIGURE_METRICS),
) -> pd.DataFrame:
    """Per alternative and metric at seed 42: each retrained run's value, default and
    alternative, and HierarchicalSAE minus TopK (default, alternative; the default's mean and
    std over its seeds), the difference the claims test."""
    alts = alternatives() if alts is None else alts
    seed = seed_of(profile)

    def value(tidy, config, metric, at_seed=True):
        df = tidy[(tidy["config"] == config) & (tidy["metric"] == metric)]
        df = _seed_rows(df, seed) if at_seed else df
        return df.set_index(pd.to_numeric(df["seed"]).astype(int))["value"].astype(float)

    rows = []
    for alt in alts:
        for m in metrics:
            sub = substituted(default, variant, alt, seed)
            d_all = value(default, HSAE, m, False) - value(default, TOPK, m, False)
            row = {
                "alternative": alt.label,
                "metric": m,
                "diff_default": (value(default, HSAE, m) - value(default, TOPK, m)).mean(),
                "diff_alternative": (value(sub, HSAE, m) - value(sub, TOPK, m)).mean(),
                "diff_default_mean": d_all.mean(),
                "diff_default_std": d_all.std(ddof=1),
            }
            for run in alt.runs:
                row[f"{run}: default"] = value(default, run, m).mean()
                row[f"{run}: alternative"] = value(sub, run, m).mean()
            rows.append(row)
    return pd.DataFrame(rows)


def figure(effects: pd.DataFrame, title: str = ""):
    """One panel per headline metric: HierarchicalSAE minus TopK at seed 42 under each
    alternative (dots) against the default (grey line at seed 42, band: the default's mean ± std
    over its seeds) and zero (black). A dot across zero flips the sign the claims test."""
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(effects["alternative"]))
    fig, axes = plt.subplots(
        1,
        len(FIGURE_METRICS),
        figsize=(3.1 * len(FIGURE_METRICS), 0.35 * len(labels) + 1.6),
        sharey=True,
        squeeze=False,
    )
    for ax, (metric, name) in zip(axes[0], FIGURE_METRICS):
        e = effects[effects["metric"] == metric].set_index("alternative").reindex(labels)
        y = range(len(labels))
        if e["diff_default"].notna().any():
            d0, mu, sd = (
                e[c].dropna().iloc[0] if e[c].notna().any() else math.nan
                for c in ("diff_default", "diff_default_mean", "diff_default_std")
            )
            if math.isfinite(sd):
                ax.axvspan(mu - sd, mu + sd, color="0.85", label="default, mean ± std over seeds")
            ax.axvline(d0, color="0.5", ls="--", label="default, seed 42")
        ax.axvline(0, color="k", lw=0.8)
        flips = (e["diff_alternative"] * e["diff_default"] < 0).to_numpy()
        ax.scatter(e["diff_alternative"], list(y), c=["C3" if f else "C0" for f in flips], zorder=3)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("HSAE - TopK", fontsize=8)
        ax.tick_params(labelsize=8)
    axes[0][0].set_yticks(list(range(len(labels))), labels)
    axes[0][0].invert_yaxis()
    axes[0][0].legend(fontsize=7, loc="lower left", bbox_to_anchor=(0, 1.12))
    fig.suptitle(
        title or "HierarchicalSAE minus TopK under each alternative reading (red: sign flipped)",
        fontsize=11,
        y=1.0,
    )
    fig.tight_layout()
    return fig


def format_effects(effects: pd.DataFrame) -> pd.DataFrame:
    """`metric_effects` pivoted for display: one row per alternative, HSAE - TopK per metric as
    'default -> alternative'."""
    cell = lambda r: f"{fmt_number(r['diff_default'])} -> {fmt_number(r['diff_alternative'])}"  # noqa: E731
    shown = effects.assign(change=effects.apply(cell, axis=1))
    return shown.pivot(index="alternative", columns="metric", values="change").reindex(
        list(dict.fromkeys(effects["alternative"]))
    )[[m for m, _ in FIGURE_METRICS if m in set(effects["metric"])]]


# ============================================================================================
# The width (an opt-in reading): density, fidelity at matched L0 and absorption
# ============================================================================================
WIDTH_METRICS = (
    ("l0", "L0"),
    ("frac_alive", "alive fraction"),
    ("explained_variance_legacy", "explained variance"),
    ("ce_loss_score", "CE loss recovered"),
    ("mean_absorption_fraction_score", "absorption fraction"),
    ("mean_full_absorption_score", "full absorption"),
)


def width_effects(
    default: pd.DataFrame, variant: pd.DataFrame, profile, alt: Alternative
) -> pd.DataFrame:
    """TopK and the HierarchicalSAE at the profile's width and at `alt`'s (seed 42), and, for
    fidelity at matched L0, the default-width run of the same family whose L0 is nearest the
    wide run's (the sweep: TopK k = 320 at 576 latents matches TopK k = 320 at 2,304)."""
    from hsae_utils.runs import family

    seed = seed_of(profile)
    means = _seed_rows(default, seed).pivot_table(
        index="config", columns="metric", values="value", aggfunc="mean"
    )
    wide = variant.pivot_table(index="config", columns="metric", values="value", aggfunc="mean")
    metrics = [m for m, _ in WIDTH_METRICS]
    rows = []
    for run in alt.runs:
        if run not in means.index or alt.config(run) not in wide.index:
            continue
        w = wide.loc[alt.config(run)]
        same = means[[family(c) == family(run) for c in means.index]].dropna(subset=["l0"])
        nearest = (same["l0"] - w["l0"]).abs().idxmin()
        for label, config, src, width in (
            ("default", run, means, profile.dict_size),
            ("wide", alt.config(run), wide, alt.value),
            ("default width, L0 nearest the wide run's", nearest, means, profile.dict_size),
        ):
            rows.append(
                {
                    "run": run,
                    "which": label,
                    "config": config,
                    "d_sae": width,
                    **{
                        name: src.loc[config].get(m, math.nan)
                        for m, name in WIDTH_METRICS
                        if m in metrics
                    },
                }
            )
    return pd.DataFrame(rows)
