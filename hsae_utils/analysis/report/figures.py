"""Figures of training runs (notebooks 02-07) and of evaluation results (notebooks 08 and 09).

Every figure is computed from logs or from a `Results` table; `save_figure` writes
`figures/<name>_<profile>.png` and `.pdf` atomically.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import NullFormatter, ScalarFormatter

from hsae_utils.config import Profile
from hsae_utils.io import atomic_path
from hsae_utils.runs import ABLATIONS, HSAE, PAPER_RUNS, TOPK, family
from hsae_utils.analysis.report.results import Results, metric_rows
from hsae_utils.analysis.report.tables import FIGURES_DIR, absorption_by_letter, frontier_points

FAMILY_STYLE = {  # colour, marker, label of each SAE family
    "topk": ("C0", "o", "TopK"),
    "batchtopk": ("C1", "s", "BatchTopK"),
    "relu_l1": ("C2", "^", "L1"),
    "hierarchical": ("C3", "D", "HierarchicalSAE stages"),
}
CORE_PANELS = (
    ("explained_variance_legacy", "explained variance ↑"),
    ("mse_norm", "MSE (normalized) ↓"),
    ("l0", "L0: active features / token"),
    ("kl_div_with_sae", "KL divergence ↓"),
    ("ce_loss_score", "CE loss recovered ↑"),
    ("dead", "dead features ↓"),
)
ABSORPTION_PANELS = (
    ("mean_absorption_fraction_score", "absorption fraction ↓"),
    ("mean_full_absorption_score", "full absorption ↓"),
)


def save_figure(fig, name: str, profile_name: str, out_dir: Path = FIGURES_DIR) -> list[Path]:
    """`<name>_<profile>.png` (150 dpi) and `.pdf`, atomically."""
    paths = []
    for ext in ("png", "pdf"):
        path = out_dir / f"{name}_{profile_name}.{ext}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight")
        paths.append(path)
    return paths


def family_color(config: str) -> str:
    return FAMILY_STYLE.get(family(config), ("C7",))[0]


# ============================================================================================
# Evaluation results
# ============================================================================================
def _bar_panel(ax, results: Results, metric: str, configs: Sequence[str], title: str) -> None:
    """Mean over seeds as a bar, std as the error bar, each seed as a dot."""
    st = results.stats(metric, configs)
    configs = list(st.index)
    x = np.arange(len(configs))
    ax.bar(x, st["mean"], yerr=st["std"].fillna(0), color=[family_color(c) for c in configs],
           alpha=0.55, capsize=3, error_kw={"lw": 1})
    for i, c in enumerate(configs):
        v = results.values(metric, c)
        ax.plot(np.full(v.size, i), v, "k.", ms=3)
    ax.set_xticks(x, [results.label(c) for c in configs], rotation=60, ha="right", fontsize=7)
    ax.set_title(title, fontsize=9)


def plot_metric_bars(results: Results, panels: Sequence[tuple[str, str]],
                     configs: Sequence[str] | None = None, title: str = ""):
    """One bar panel per (metric, title) present; None if none is."""
    panels = [p for p in panels if results.has(p[0])]
    configs = [c for c in (configs or results.configs) if c in results.configs]
    if not panels or not configs:
        print("No results to plot.")
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(2.7 * len(panels), 3.6), squeeze=False)
    for ax, (m, panel_title) in zip(axes[0], panels):
        _bar_panel(ax, results, m, configs, panel_title)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_core_metrics(results: Results, configs: Sequence[str] | None = PAPER_RUNS):
    """Figure 1: core metrics per configuration, bars = mean, error bars = std over seeds
    (`configs=None`: every configuration evaluated)."""
    return plot_metric_bars(results, CORE_PANELS, configs,
                            f"Core metrics, {results.title} (mean ± std over seeds; dots: seeds)")


def plot_absorption_scores(results: Results, configs: Sequence[str] | None = None):
    """The absorption scores (means over the letters the probe detects) per configuration."""
    return plot_metric_bars(results, ABSORPTION_PANELS, configs,
                            f"Feature absorption, {results.title}")


def plot_probing(results: Results, configs: Sequence[str] | None = PAPER_RUNS,
                 ks: Sequence[int] = (1, 5, 20)):
    """Figure 2: sparse-probing accuracy on the top-k SAE latents, with the residual stream's
    own accuracy (all dimensions, and top-1) as reference lines."""
    configs = [c for c in (configs or results.configs) if c in results.configs]
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
    ax.set_title(f"Sparse probing, {results.title}", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def plot_absorption(results: Results, configs: Sequence[str] = (TOPK, HSAE)):
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
               color=family_color(c), label=results.label(c))
    ax.set_xticks(x, table.index)
    ax.set_xlabel("first letter (letters whose probe reaches F1 > 0.6)")
    ax.set_ylabel("mean absorption fraction ↓")
    ax.set_title(f"Feature absorption per letter, {results.title}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


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
    fig.suptitle(f"Sparsity-fidelity frontier, {results.title} "
                 f"(means over seeds; the sweep points have one seed)", fontsize=10)
    fig.tight_layout()
    return fig


# ============================================================================================
# Training logs
# ============================================================================================
TRAINING_CURVES = (("loss", "loss", True), ("l0", "L0 (active latents / token)", False),
                   ("dead", "dead features", False), ("l1_weight", "lambda_t * alpha_t", False))
STAGE_CURVES = (("mse", "training MSE", True), ("l0", "L0", False),
                ("dead", "dead features", False), ("l1_weight", "lambda_t x alpha_t", False))


def series(log: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of one logged metric; "l1_weight" is lambda_t x alpha_t."""
    steps = np.array([r["step"] for r in log])
    if key == "l1_weight":
        vals = [r.get("lambda_t", np.nan) * r.get("alpha_t", 1.0) if "lambda_t" in r else np.nan
                for r in log]
    else:
        vals = [r.get(key, np.nan) for r in log]
    return steps, np.array(vals, dtype=float)


def plot_training_curves(runs: Sequence, title: str = "", show_events: bool = True):
    """Loss, L0, dead features and the L1 weight against step, one line per (run, seed).

    `runs`: objects with .name, .seed, .log (metric rows) and .events. Resample events are
    marked with ticks at the bottom of each panel, merge events with ticks at the top.
    """
    fig, axes = plt.subplots(1, len(TRAINING_CURVES), figsize=(4 * len(TRAINING_CURVES), 3.2))
    names = list(dict.fromkeys(r.name for r in runs))
    for r in runs:
        color = f"C{names.index(r.name)}"
        for ax, (key, label, _) in zip(axes, TRAINING_CURVES):
            steps, vals = series(r.log, key)
            if np.isfinite(vals).any():
                ax.plot(steps, vals, color=color, alpha=0.8,
                        label=f"{r.name} s{r.seed}" if ax is axes[0] else None)
            ax.set(title=label, xlabel="step")
        if show_events:
            for ev in r.events:
                y = 0.0 if ev.get("event") == "resample" else 1.0
                for ax in axes:
                    ax.plot([ev["step"]], [y], marker="|" if y == 0 else "v", color=color,
                            transform=ax.get_xaxis_transform(), ms=8, clip_on=False)
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def events_table(runs: Sequence) -> pd.DataFrame:
    """Resample and merge events of each run (one row per event)."""
    rows = []
    for r in runs:
        for ev in r.events:
            rows.append({"run": r.name, "seed": r.seed, "step": ev["step"], "event": ev.get("event"),
                         "latents": ev.get("n_latents", len(ev.get("pairs", [])))})
    return pd.DataFrame(rows, columns=["run", "seed", "step", "event", "latents"])


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
    fig, axes = plt.subplots(1, len(STAGE_CURVES), figsize=(4 * len(STAGE_CURVES), 3.3))
    for i, (config, seed_logs) in enumerate(logs.items()):
        for ax, (key, title, logy) in zip(axes, STAGE_CURVES):
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
