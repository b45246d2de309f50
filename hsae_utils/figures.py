"""The figures and tables of notebook 09, all computed from the results of the runs.

Inputs are the evaluation table of notebook 08 (`results_dir/evaluation.csv`: run, config, seed,
metric, value) and the training logs of notebooks 02-07; nothing here holds a number of its own.
Figures are written to `figures/<name>_<profile>.png` and `.pdf`, tables next to them as Markdown
and CSV (atomically, like every output of the repo).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import NullFormatter, ScalarFormatter

from .claims import markdown_table
from .config import REPO_ROOT, Profile
from .experiments import ABLATIONS, BASELINES, family
from .io import atomic_path, write_text_atomic
from .plotting import series

FIGURES_DIR = REPO_ROOT / "figures"
HSAE = ABLATIONS[-1].name  # the full method: stage 5, +clustering
# The paper's Table 1 compares against TopK; the other baselines are shown beside it.
MAIN_CONFIGS = tuple(r.name for r in BASELINES + ABLATIONS)
FAMILY_STYLE = {  # colour, marker, label of each SAE family in the frontier plot
    "topk": ("C0", "o", "TopK"),
    "batchtopk": ("C1", "s", "BatchTopK"),
    "relu_l1": ("C2", "^", "L1"),
    "hierarchical": ("C3", "D", "HierarchicalSAE stages"),
}


@dataclass
class Results:
    """The evaluation table of one profile with the labels of its configurations."""

    profile: Profile
    tidy: pd.DataFrame  # run, config, seed, metric, value
    labels: dict[str, str]  # config -> label

    @property
    def configs(self) -> list[str]:
        """Configurations present, the paper's runs first (in order), then the sweep by family."""
        present = list(dict.fromkeys(self.tidy["config"]))
        main = [c for c in MAIN_CONFIGS if c in present]
        return main + sorted((c for c in present if c not in main), key=lambda c: (family(c), c))

    def label(self, config: str) -> str:
        return self.labels.get(config, config)

    def values(self, metric: str, config: str) -> np.ndarray:
        df = self.tidy
        return df[(df["metric"] == metric) & (df["config"] == config)]["value"].to_numpy(float)

    def stats(self, metric: str, configs: Iterable[str] | None = None) -> pd.DataFrame:
        """mean, std (over seeds; NaN for one seed) and n per configuration."""
        rows = []
        for c in configs or self.configs:
            v = self.values(metric, c)
            if v.size:
                rows.append({"config": c, "mean": v.mean(),
                             "std": v.std(ddof=1) if v.size > 1 else np.nan, "n": v.size})
        return pd.DataFrame(rows, columns=["config", "mean", "std", "n"]).set_index("config")

    def has(self, metric: str) -> bool:
        return bool((self.tidy["metric"] == metric).any())


def load_results(profile: Profile) -> Results:
    """Read notebook 08's evaluation table, with the training losses of notebooks 02-07 added as
    metric `train_loss` (the loss on the last logged training batch, the paper's "Loss")."""
    path = profile.results_dir / "evaluation.csv"
    if not path.exists():
        raise FileNotFoundError(
            f"No evaluation results at {path}. Run the evaluation notebook first: "
            f"./run_all.sh --profile {profile.name} (or --only 08 once the SAEs are trained).")
    tidy = pd.read_csv(path)
    runs_path = profile.results_dir / "evaluation_runs.csv"
    runs = pd.read_csv(runs_path) if runs_path.exists() else pd.DataFrame(columns=["config", "label"])
    labels = dict(zip(runs["config"], runs["label"]))
    return Results(profile, pd.concat([tidy, train_losses(profile, runs)], ignore_index=True), labels)


def metric_rows(run_folder: Path) -> list[dict]:
    """The "metrics" rows of a run folder's training log (empty when there is none)."""
    from .checkpoint import LOG_NAME
    from .train import read_log

    return [r for r in read_log(run_folder / LOG_NAME) if r.get("kind") == "metrics"]


def train_losses(profile: Profile, runs: pd.DataFrame) -> pd.DataFrame:
    """`train_loss` rows (last logged training loss) for each evaluated run with a training log."""
    rows = []
    for r in runs.itertuples():
        log = metric_rows(profile.sae_dir / r.run)
        if log:
            rows.append({"run": r.run, "config": r.config, "seed": r.seed, "metric": "train_loss",
                         "value": log[-1]["loss"]})
    return pd.DataFrame(rows, columns=["run", "config", "seed", "metric", "value"])


# ============================================================================================
# Tables
# ============================================================================================
TABLE1_COLUMNS = (  # (metric, column title, digits)
    ("train_loss", "Loss (train)", 1),
    ("explained_variance_legacy", "Explained variance", 3),
    ("frac_variance_explained", "Variance explained (var-based)", 3),
    ("mse", "MSE", 2),
    ("l0", "L0 (active features)", 1),
    ("kl_div_with_sae", "KL div", 4),
    ("ce_loss_score", "CE recovered", 3),
    ("dead", "Dead features", 1),
)


def mean_std(values: np.ndarray, digits: int) -> str:
    if values.size == 0:
        return "–"
    if values.size == 1:
        return f"{values[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def table1(results: Results, configs: Sequence[str] = MAIN_CONFIGS) -> pd.DataFrame:
    """The paper's Table 1 for this run: one row per configuration, mean ± std over seeds.

    "Loss" is the last training-batch loss, which includes each architecture's own sparsity
    penalty and so only compares runs of one family; MSE is measured on held-out tokens."""
    configs = [c for c in configs if c in results.configs]
    cols = [(m, t, d) for m, t, d in TABLE1_COLUMNS if results.has(m)]
    table = pd.DataFrame(
        {t: [mean_std(results.values(m, c), d) for c in configs] for m, t, d in cols},
        index=pd.Index([results.label(c) for c in configs], name="Configuration"))
    table.insert(0, "Seeds", [int(results.values(cols[0][0], c).size) for c in configs])
    return table


def write_table(table: pd.DataFrame, name: str, profile_name: str,
                out_dir: Path = FIGURES_DIR) -> dict[str, Path]:
    """`<name>_<profile>.md` (GitHub Markdown) and `.csv`, atomically."""
    paths = {"md": out_dir / f"{name}_{profile_name}.md", "csv": out_dir / f"{name}_{profile_name}.csv"}
    write_text_atomic(paths["md"], markdown_table(table.reset_index()) + "\n")
    write_text_atomic(paths["csv"], table.to_csv())
    return paths


# ============================================================================================
# Figures
# ============================================================================================
def save_figure(fig, name: str, profile_name: str, out_dir: Path = FIGURES_DIR) -> list[Path]:
    """`<name>_<profile>.png` (150 dpi) and `.pdf`, atomically."""
    paths = []
    for ext in ("png", "pdf"):
        path = out_dir / f"{name}_{profile_name}.{ext}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight")
        paths.append(path)
    return paths


def _config_colors(configs: Sequence[str]) -> list[str]:
    return [FAMILY_STYLE.get(family(c), ("C7",))[0] for c in configs]


def _bar_panel(ax, results: Results, metric: str, configs: Sequence[str], title: str) -> None:
    """Mean over seeds as a bar, std as the error bar, each seed as a dot."""
    st = results.stats(metric, configs)
    configs = list(st.index)
    x = np.arange(len(configs))
    ax.bar(x, st["mean"], yerr=st["std"].fillna(0), color=_config_colors(configs), alpha=0.55,
           capsize=3, error_kw={"lw": 1})
    for i, c in enumerate(configs):
        v = results.values(metric, c)
        ax.plot(np.full(v.size, i), v, "k.", ms=3)
    ax.set_xticks(x, [results.label(c) for c in configs], rotation=60, ha="right", fontsize=7)
    ax.set_title(title, fontsize=9)


CORE_PANELS = (
    ("explained_variance_legacy", "explained variance ↑"),
    ("mse", "MSE (normalized) ↓"),
    ("l0", "L0: active features / token"),
    ("kl_div_with_sae", "KL divergence ↓"),
    ("ce_loss_score", "CE loss recovered ↑"),
    ("dead", "dead features ↓"),
)


def plot_core_metrics(results: Results, configs: Sequence[str] = MAIN_CONFIGS):
    """Figure 1: core metrics per configuration, bars = mean, error bars = std over seeds."""
    panels = [p for p in CORE_PANELS if results.has(p[0])]
    configs = [c for c in configs if c in results.configs]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.7 * len(panels), 3.6), squeeze=False)
    for ax, (m, title) in zip(axes[0], panels):
        _bar_panel(ax, results, m, configs, title)
    fig.suptitle(f"Core metrics, {results.profile.name} profile "
                 f"(mean ± std over seeds; dots: seeds)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_probing(results: Results, configs: Sequence[str] = MAIN_CONFIGS,
                 ks: Sequence[int] = (1, 5, 20)):
    """Figure 2: sparse-probing accuracy on the top-k SAE latents, with the residual stream's
    own accuracy (all dimensions, and top-1) as reference lines."""
    configs = [c for c in configs if c in results.configs]
    ks = [k for k in ks if results.has(f"sae_top_{k}_test_accuracy")]
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(configs), 3.8))
    if not ks:
        ax.text(0.5, 0.5, "no sparse-probing results", ha="center", transform=ax.transAxes)
        return fig
    width = 0.8 / len(ks)
    x = np.arange(len(configs))
    for j, k in enumerate(ks):
        st = results.stats(f"sae_top_{k}_test_accuracy", configs).reindex(configs)
        ax.bar(x + (j - (len(ks) - 1) / 2) * width, st["mean"], width, yerr=st["std"].fillna(0),
               capsize=2, label=f"SAE top-{k}", color=f"C{j}", alpha=0.75, error_kw={"lw": 1})
    for metric, style, name in (("llm_test_accuracy", "-", "residual stream (all dims)"),
                                ("llm_top_1_test_accuracy", "--", "residual stream top-1")):
        if results.has(metric):
            ax.axhline(results.tidy[results.tidy["metric"] == metric]["value"].mean(), color="k",
                       ls=style, lw=1, label=name)
    ax.set_xticks(x, [results.label(c) for c in configs], rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0.4, 1.0)
    ax.set_ylabel("test accuracy (mean over tasks)")
    ax.set_title(f"Sparse probing, {results.profile.name} profile", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def absorption_by_letter(results: Results, configs: Sequence[str] = ("topk", HSAE)) -> pd.DataFrame:
    """Per-letter absorption fraction (mean over seeds), letters as rows, configurations as
    columns; only letters the ground-truth probe detects (SAEBench's F1 > 0.6 rule)."""
    df = results.tidy[results.tidy["metric"].str.startswith("absorption_fraction:")
                      & results.tidy["config"].isin(configs)]
    if df.empty:
        return pd.DataFrame()
    df = df.assign(letter=df["metric"].str.split(":").str[1])
    table = df.pivot_table(index="letter", columns="config", values="value", aggfunc="mean")
    return table[[c for c in configs if c in table.columns]].sort_index()


def plot_absorption(results: Results, configs: Sequence[str] = ("topk", HSAE)):
    """Per-letter absorption fraction of TopK versus HierarchicalSAE (lower is better)."""
    table = absorption_by_letter(results, configs)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * len(table) + 2), 3.2))
    if table.empty:
        ax.text(0.5, 0.5, "no absorption results", ha="center", transform=ax.transAxes)
        return fig
    width = 0.8 / table.shape[1]
    x = np.arange(len(table))
    for j, c in enumerate(table.columns):
        ax.bar(x + (j - (table.shape[1] - 1) / 2) * width, table[c], width,
               color=FAMILY_STYLE.get(family(c), ("C7",))[0], label=results.label(c))
    ax.set_xticks(x, table.index)
    ax.set_xlabel("first letter (letters whose probe reaches F1 > 0.6)")
    ax.set_ylabel("mean absorption fraction ↓")
    ax.set_title(f"Feature absorption per letter, {results.profile.name} profile", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


CURVE_PANELS = (("mse", "training MSE", True), ("l0", "L0", False), ("dead", "dead features", False),
                ("l1_weight", "lambda_t x alpha_t", False))


def stage_logs(profile: Profile, configs: Sequence[str] = tuple(r.name for r in ABLATIONS)):
    """{config: [metric rows of each seed's training log]} for the runs that have logs."""
    out = {}
    for c in configs:
        logs = [metric_rows(f) for f in sorted((profile.sae_dir / c).glob("seed*"))]
        if any(logs):
            out[c] = [log for log in logs if log]
    return out


def plot_stage_curves(profile: Profile, labels: dict[str, str] | None = None):
    """Training curves of the ablation stages side by side: mean over seeds, band = min..max."""
    logs = stage_logs(profile)
    labels = labels or {}
    fig, axes = plt.subplots(1, len(CURVE_PANELS), figsize=(4 * len(CURVE_PANELS), 3.3))
    for i, (config, seed_logs) in enumerate(logs.items()):
        for ax, (key, title, logy) in zip(axes, CURVE_PANELS):
            curves = [series(log, key) for log in seed_logs]
            n = min(len(s) for s, _ in curves)
            steps, vals = curves[0][0][:n], np.stack([v[:n] for _, v in curves])
            if not np.isfinite(vals).any():
                continue
            color = plt.cm.viridis(i / max(1, len(logs) - 1))
            ax.plot(steps, np.nanmean(vals, 0), color=color, lw=1.3,
                    label=labels.get(config, config) if ax is axes[0] else None)
            ax.fill_between(steps, np.nanmin(vals, 0), np.nanmax(vals, 0), color=color, alpha=0.15)
            ax.set(title=title, xlabel="step")
            if logy:
                ax.set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Training curves of the ablation stages, {profile.name} profile "
                 f"(line: mean over seeds; band: min-max)", fontsize=10)
    fig.tight_layout()
    return fig


def frontier_points(results: Results, metrics: Sequence[str]) -> pd.DataFrame:
    """One row per configuration: family, L0 and each metric (means over seeds)."""
    rows = []
    for c in results.configs:
        l0 = results.values("l0", c)
        if l0.size == 0:
            continue
        row = {"config": c, "label": results.label(c), "family": family(c), "l0": l0.mean()}
        for m in metrics:
            v = results.values(m, c)
            row[m] = v.mean() if v.size else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def plot_frontier(results: Results, metrics: Sequence[tuple[str, str]] = (
        ("explained_variance_legacy", "explained variance"), ("ce_loss_score", "CE loss recovered"))):
    """Sparsity-fidelity frontier: each metric against L0 for each family (the sweep's sparsity
    levels joined by a line), and the HierarchicalSAE stages as labelled points."""
    metrics = [(m, t) for m, t in metrics if results.has(m)]
    pts = frontier_points(results, [m for m, _ in metrics])
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4), squeeze=False)
    for ax, (m, title) in zip(axes[0], metrics):
        for fam, (color, marker, name) in FAMILY_STYLE.items():
            p = pts[pts["family"] == fam].sort_values("l0")
            if p.empty:
                continue
            ls = "none" if fam == "hierarchical" else "-"
            ax.plot(p["l0"], p[m], ls=ls, marker=marker, color=color, ms=6,
                    label=name + (" (numbers: stage)" if fam == "hierarchical" else ""))
            if fam == "hierarchical":  # stage numbers, staggered: stages often coincide
                for j, r in enumerate(p.sort_values("config").itertuples()):
                    ax.annotate(r.config[len("stage"):].split("_")[0], (r.l0, getattr(r, m)),
                                fontsize=7, xytext=(4, -10 + 6 * j), textcoords="offset points",
                                color=color)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set(xlabel="L0 (active features per token, log scale)", ylabel=title,
               title=f"{title} vs L0")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"Sparsity-fidelity frontier, {results.profile.name} profile "
                 f"(means over seeds; the sweep points have one seed)", fontsize=10)
    fig.tight_layout()
    return fig
