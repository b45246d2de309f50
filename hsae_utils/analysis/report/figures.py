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
from matplotlib.ticker import NullFormatter

from hsae_utils.analysis.report.results import Results, metric_rows
from hsae_utils.analysis.report.tables import FIGURES_DIR, absorption_letter_stats, frontier_points
from hsae_utils.config import Profile
from hsae_utils.io import atomic_path
from hsae_utils.runs import ABLATIONS, HSAE, PAPER_RUNS, TOPK, family

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
    ax.bar(
        x,
        st["mean"],
        yerr=st["std"].fillna(0),
        color=[family_color(c) for c in configs],
        alpha=0.55,
        capsize=3,
        error_kw={"lw": 1},
    )
    for i, c in enumerate(configs):
        v = results.values(metric, c)
        ax.plot(np.full(v.size, i), v, "k.", ms=3)
    ax.set_xticks(x, [results.label(c) for c in configs], rotation=60, ha="right", fontsize=7)
    ax.set_title(title, fontsize=9)


def all_zero(results: Results, metric: str, configs: Sequence[str]) -> bool:
    """True when every value of `metric` for these configurations is 0 (a panel of nothing)."""
    v = np.concatenate([results.values(metric, c) for c in configs] or [np.zeros(0)])
    return v.size > 0 and bool(np.all(v == 0))


def plot_metric_bars(
    results: Results,
    panels: Sequence[tuple[str, str]],
    configs: Sequence[str] | None = None,
    title: str = "",
):
    """One bar panel per (metric, title) present; a metric that is 0 for every configuration
    gets no panel but a note under the figure. None if no panel is left."""
    configs = [c for c in (configs or results.configs) if c in results.configs]
    zero = [t for m, t in panels if results.has(m) and all_zero(results, m, configs)]
    panels = [(m, t) for m, t in panels if results.has(m) and t not in zero]
    if not panels or not configs:
        print("No results to plot.")
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(2.7 * len(panels), 3.6), squeeze=False)
    for ax, (m, panel_title) in zip(axes[0], panels):
        _bar_panel(ax, results, m, configs, panel_title)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    if zero:
        fig.text(
            0.5, -0.02, "0 for every SAE, so not drawn: " + ", ".join(zero), ha="center", fontsize=8
        )
    return fig


def plot_core_metrics(results: Results, configs: Sequence[str] | None = PAPER_RUNS):
    """Figure 1: core metrics per configuration, bars = mean, error bars = std over seeds
    (`configs=None`: every configuration evaluated)."""
    return plot_metric_bars(
        results,
        CORE_PANELS,
        configs,
        f"Core metrics, {results.title} (mean ± std over seeds; dots: seeds)",
    )


def plot_absorption_scores(results: Results, configs: Sequence[str] | None = None):
    """The absorption scores (means over the letters the probe detects) per configuration."""
    return plot_metric_bars(
        results, ABSORPTION_PANELS, configs, f"Feature absorption, {results.title}"
    )


def plot_probing(
    results: Results, configs: Sequence[str] | None = PAPER_RUNS, ks: Sequence[int] = (1, 5, 20)
):
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
        ax.bar(
            x + (j - (len(ks) - 1) / 2) * width,
            st["mean"],
            width,
            yerr=st["std"].fillna(0),
            capsize=2,
            label=f"SAE top-{k}",
            color=f"C{j}",
            alpha=0.75,
            error_kw={"lw": 1},
        )
    for metric, style, name in (
        ("llm_test_accuracy", "-", "residual stream (all dims)"),
        ("llm_top_1_test_accuracy", "--", "residual stream top-1"),
    ):
        if results.has(metric):
            ax.axhline(
                results.tidy[results.tidy["metric"] == metric]["value"].mean(),
                color="k",
                ls=style,
                lw=1,
                label=name,
            )
    ax.set_xticks(x, [results.label(c) for c in configs], rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0.4, 1.0)
    ax.set_ylabel("test accuracy (mean over tasks)")
    ax.set_title(f"Sparse probing, {results.title}", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


LETTER_MEASURES = (  # (per-letter metric prefix, panel title)
    ("absorption_fraction", "mean absorption fraction ↓ (SAEBench)"),
    ("full_absorption", "full absorption rate ↓ (SAEBench)"),
)


def plot_absorption(results: Results, configs: Sequence[str] = (TOPK, HSAE)):
    """Per-letter absorption of TopK versus HierarchicalSAE (lower is better), one panel per
    SAEBench measure present: bars = mean over seeds, error bars = std over seeds."""
    stats = {m: absorption_letter_stats(results, configs, m) for m, _ in LETTER_MEASURES}
    present = [(m, t) for m, t in LETTER_MEASURES if not stats[m].empty]
    zero = [t for m, t in present if bool((stats[m]["mean"] == 0).all())]
    measures = [(m, t) for m, t in present if t not in zero]  # a panel of zeros says nothing
    if not measures:
        fig, ax = plt.subplots(figsize=(6, 1.5))
        ax.text(
            0.5,
            0.5,
            "no absorption results"
            if not present
            else "absorption is 0 for every letter and SAE:\n" + ", ".join(zero),
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
        ax.set_axis_off()
        return fig
    n_letters = stats[measures[0][0]].index.get_level_values("letter").nunique()
    fig, axes = plt.subplots(
        len(measures),
        1,
        squeeze=False,
        sharex=True,
        figsize=(max(6.5, 0.45 * n_letters + 4.5), 2.9 * len(measures)),
    )
    for ax, (measure, title) in zip(axes[:, 0], measures):
        st = stats[measure]
        letters = sorted(st.index.get_level_values("letter").unique())
        cols = [c for c in configs if c in st.index.get_level_values("config")]
        width = 0.8 / len(cols)
        x = np.arange(len(letters))
        for j, c in enumerate(cols):
            d = st.xs(c, level="config").reindex(letters)
            ax.bar(
                x + (j - (len(cols) - 1) / 2) * width,
                d["mean"],
                width,
                yerr=d["std"].fillna(0),
                capsize=2,
                error_kw={"lw": 0.8},
                color=family_color(c),
                label=f"{results.label(c)} ({_seeds(d['n'].max())})",
            )
        ax.set_xticks(x, letters)
        ax.set_ylabel(title.split(" (")[0], fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    axes[-1, 0].set_xlabel("first letter (letters whose probe reaches F1 > 0.6)")
    fig.suptitle(
        f"Feature absorption per letter, {results.title} (bars: mean over seeds; error bars: std)",
        fontsize=10,
    )
    fig.tight_layout()
    if zero:
        fig.text(
            0.5,
            -0.01,
            "0 for every letter and SAE, so not drawn: " + ", ".join(zero),
            ha="center",
            fontsize=8,
        )
    return fig


def _seeds(n) -> str:
    return f"{int(n)} seed" + ("s" if int(n) != 1 else "")


FRONTIER_PANELS = (  # (metric, axis label, higher is better)
    ("explained_variance_legacy", "explained variance", True),
    ("ce_loss_score", "CE loss recovered", True),
    ("kl_div_with_sae", "KL divergence with the SAE spliced in", False),
    ("mean_full_absorption_score", "full absorption (SAEBench)", False),
    ("mean_absorption_fraction_score", "absorption fraction (SAEBench)", False),
)
FRONTIER_STYLE = {  # curve (tables.frontier_method) -> colour, marker, line style, label
    "topk": ("C0", "o", "-", "TopK"),
    "batchtopk": ("C1", "s", "-", "BatchTopK"),
    "relu_l1": ("C2", "^", "-", "ReLU + L1"),
    "stage1": ("C4", "v", "--", "HierarchicalSAE stage 1 (linear sparsity only)"),
    "hierarchical": ("C3", "D", "-", "HierarchicalSAE (all five mechanisms)"),
}


def _log_ticks(ax, lo: float, hi: float) -> None:
    """Log-scale x ticks at 1, 2, 5 x 10^k within [lo, hi], written as plain numbers."""
    ticks = [
        m * 10**e
        for e in range(int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi))) + 1)
        for m in (1, 2, 5)
        if lo <= m * 10**e <= hi
    ]
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot_frontier(results: Results, panels: Sequence[tuple[str, str, bool]] = FRONTIER_PANELS):
    """Sparsity-fidelity frontier: each metric against L0 (log scale), one curve per method (its
    runs sorted by L0 and joined), error bars = std over seeds, one panel per metric present
    (a metric that is 0 for every SAE gets a note under the figure instead)."""
    panels = [p for p in panels if results.has(p[0])]
    pts = frontier_points(results, [m for m, _, _ in panels])
    pts = pts[pts["method"].notna()]
    zero = [label for m, label, _ in panels if len(pts) and bool((pts[m].fillna(0) == 0).all())]
    panels = [p for p in panels if p[1] not in zero]  # a panel of zeros says nothing
    ncols = len(panels) + 1 if len(panels) <= 3 else 3  # one more slot: the legend
    nrows = -(-(len(panels) + 1) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.6 * nrows), squeeze=False)
    flat = axes.ravel()
    lo = max(pts["l0"].min() / 1.4, 0.5) if len(pts) else 1
    hi = pts["l0"].max() * 1.4 if len(pts) else 10
    for ax, (m, label, higher) in zip(flat, panels):
        other = [m for m in dict.fromkeys(pts["method"]) if m not in FRONTIER_STYLE]
        styles = {**FRONTIER_STYLE, **{m: ("C7", "x", ":", m) for m in other}}  # never dropped
        for method, (color, marker, ls, name) in styles.items():
            p = pts[pts["method"] == method].sort_values("l0")
            if p.empty or p[m].isna().all():
                continue
            ax.errorbar(
                p["l0"],
                p[m],
                xerr=p["l0_std"].fillna(0),
                yerr=p[f"{m}_std"].fillna(0),
                color=color,
                marker=marker,
                ls=ls,
                ms=5,
                capsize=2,
                lw=1.3,
                label=name,
            )
        _log_ticks(ax, lo, hi)
        better = "↑ higher is better" if higher else "↓ lower is better"
        ax.set(
            xlabel="L0: active features per token (log scale)",
            ylabel=f"{label} {better[0]}",
            title=f"{label}\n({better[2:]})",
        )
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3, which="major")
    for ax in flat[len(panels) :]:
        ax.set_axis_off()
    handles, labels = flat[0].get_legend_handles_labels()
    flat[len(panels)].legend(
        handles, labels, loc="center", fontsize=8, title="one point per run configuration"
    )
    fig.suptitle(
        f"Sparsity-fidelity frontier, {results.title} (mean over seeds; error bars: "
        f"std over seeds where a run has several)",
        fontsize=10,
    )
    fig.tight_layout()
    if zero:
        fig.text(
            0.5, -0.01, "0 for every SAE, so not drawn: " + ", ".join(zero), ha="center", fontsize=8
        )
    return fig


# ============================================================================================
# Training logs
# ============================================================================================
TRAINING_CURVES = (
    ("loss", "loss", True),
    ("l0", "L0 (active latents / token)", False),
    ("dead", "dead features", False),
    ("l1_weight", "lambda_t * alpha_t", False),
)
STAGE_CURVES = (
    ("mse", "training MSE", True),
    ("l0", "L0", False),
    ("dead", "dead features", False),
    ("l1_weight", "lambda_t x alpha_t", False),
)


def series(log: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of one logged metric; "l1_weight" is lambda_t x alpha_t."""
    steps = np.array([r["step"] for r in log])
    if key == "l1_weight":
        vals = [
            r.get("lambda_t", np.nan) * r.get("alpha_t", 1.0) if "lambda_t" in r else np.nan
            for r in log
        ]
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
                ax.plot(
                    steps,
                    vals,
                    color=color,
                    alpha=0.8,
                    label=f"{r.name} s{r.seed}" if ax is axes[0] else None,
                )
            ax.set(title=label, xlabel="step")
        if show_events:
            for ev in r.events:
                y = 0.0 if ev.get("event") == "resample" else 1.0
                for ax in axes:
                    ax.plot(
                        [ev["step"]],
                        [y],
                        marker="|" if y == 0 else "v",
                        color=color,
                        transform=ax.get_xaxis_transform(),
                        ms=8,
                        clip_on=False,
                    )
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
            rows.append(
                {
                    "run": r.name,
                    "seed": r.seed,
                    "step": ev["step"],
                    "event": ev.get("event"),
                    "latents": ev.get("n_latents", len(ev.get("pairs", []))),
                }
            )
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
            ax.plot(
                steps,
                np.nanmean(vals, 0),
                color=color,
                lw=1.3,
                label=labels.get(config, config) if ax is axes[0] else None,
            )
            ax.fill_between(steps, np.nanmin(vals, 0), np.nanmax(vals, 0), color=color, alpha=0.15)
            ax.set(title=title, xlabel="step")
            if logy:
                ax.set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.suptitle(
        f"Training curves of the ablation stages, {profile.name} profile "
        f"(line: mean over seeds; band: min-max)",
        fontsize=10,
    )
    fig.tight_layout()
    return fig
