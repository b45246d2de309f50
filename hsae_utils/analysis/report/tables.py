"""Tables of evaluation results: configurations x metrics as "mean ± std over seeds", the
paper's Table 1, per-letter absorption and the frontier points; written as Markdown and CSV."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from hsae_utils.analysis.report.results import HEADLINE_METRICS, PROBING_REFERENCES, Results
from hsae_utils.config import REPO_ROOT
from hsae_utils.io import write_text_atomic
from hsae_utils.runs import HSAE, PAPER_RUNS, TOPK, family

FIGURES_DIR = REPO_ROOT / "figures"
TABLE1_COLUMNS = (  # (metric, column title, digits)
    ("train_loss", "Loss (train)", 1),
    ("explained_variance_legacy", "Explained variance", 3),
    ("frac_variance_explained", "Variance explained (var-based)", 3),
    ("mse_norm", "MSE (normalized)", 2),
    ("l0", "L0 (active features)", 1),
    ("kl_div_with_sae", "KL div", 4),
    ("ce_loss_score", "CE recovered", 3),
    ("dead", "Dead features", 1),
    ("resampled_latents", "Resampled latents (train)", 0),
    ("merged_pairs", "Merged pairs (train)", 0),
)


def mean_std(values: np.ndarray, digits: int) -> str:
    if values.size == 0:
        return "–"
    if values.size == 1:
        return f"{values[0]:.{digits}f}"
    if digits == 0 and np.ptp(values) > 0:  # counts that differ over seeds: 0.3 ± 0.6, not 0 ± 1
        digits = 1
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def metric_table(
    results: Results, columns: Sequence[tuple[str, str, int]], configs: Sequence[str] | None = None
) -> pd.DataFrame:
    """One row per configuration, one column per (metric, title, digits) present:
    "mean ± std" over seeds (std left out for one seed); "Seeds" counts the first column's."""
    configs = [c for c in (configs or results.configs) if c in results.configs]
    cols = [(m, t, d) for m, t, d in columns if results.has(m)]
    if not configs or not cols:
        return pd.DataFrame()
    table = pd.DataFrame(
        {t: [mean_std(results.values(m, c), d) for c in configs] for m, t, d in cols},
        index=pd.Index([results.label(c) for c in configs], name="Configuration"),
    )
    table.insert(0, "Seeds", [int(results.values(cols[0][0], c).size) for c in configs])
    return table


def identical_configs(
    tidy: pd.DataFrame, checksums: dict[str, str] | None = None
) -> dict[str, str]:
    """config -> the earlier configuration (PAPER_RUNS order, then by name) whose results it
    repeats exactly: the same seeds and, on every seed, the same value of every metric (e.g. an
    ablation stage whose mechanism never acted: no latent died, nothing merged). `checksums`
    (run -> sha256 of its exported weights) also counts: identical weights on every seed."""
    order = [c for c in PAPER_RUNS if c in set(tidy["config"])]
    order += sorted(set(tidy["config"]) - set(order))
    keyed = {
        c: g.set_index(["seed", "metric"])["value"].astype(float).sort_index()
        for c, g in tidy.groupby("config")
    }
    runs = {c: sorted(tidy.loc[tidy["config"] == c, "run"].unique()) for c in order}
    same: dict[str, str] = {}
    for i, c in enumerate(order):
        for earlier in order[:i]:
            if earlier in same or family(earlier) != family(c):
                continue
            a, b = keyed[c], keyed[earlier]
            by_metrics = a.index.equals(b.index) and np.array_equal(
                a.to_numpy(), b.to_numpy(), equal_nan=True
            )
            sums = [checksums.get(r) for r in runs[c] + runs[earlier]] if checksums else []
            by_weights = (
                bool(sums)
                and None not in sums
                and len(runs[c]) == len(runs[earlier])
                and [checksums[r] for r in runs[c]] == [checksums[r] for r in runs[earlier]]
            )
            if by_metrics or by_weights:
                same[c] = earlier
                break
    return same


def summary_table(
    results: Results,
    metrics: Sequence[str] = HEADLINE_METRICS + PROBING_REFERENCES,
    digits: int = 3,
) -> pd.DataFrame:
    """Every configuration x the headline metrics (notebook 08)."""
    return metric_table(results, [(m, m, digits) for m in metrics])


def table1(results: Results, configs: Sequence[str] = PAPER_RUNS) -> pd.DataFrame:
    """The paper's Table 1 for this run: one row per configuration, mean ± std over seeds.

    "Loss" is the last training-batch loss, which includes each architecture's own sparsity
    penalty and so only compares runs of one family; MSE is measured on held-out tokens. The
    resample and merge columns total the mechanisms' events over training; "Same as" marks a
    configuration whose results repeat an earlier one's exactly (`identical_configs`: every
    metric on every seed, or the exported weights), e.g. a stage whose mechanism never acted."""
    table = metric_table(results, TABLE1_COLUMNS, configs)
    if table.empty:
        return table
    same = identical_configs(results.tidy, results.checksums)
    shown = [c for c in (configs or results.configs) if c in results.configs]
    table["Same as"] = [f"= {results.label(same[c])}" if c in same else "" for c in shown]
    return table


def absorption_by_letter(results: Results, configs: Sequence[str] = (TOPK, HSAE)) -> pd.DataFrame:
    """Per-letter absorption fraction (mean over seeds), letters as rows, configurations as
    columns; only letters the ground-truth probe detects (SAEBench's F1 > 0.6 rule)."""
    df = results.tidy[
        results.tidy["metric"].str.startswith("absorption_fraction:")
        & results.tidy["config"].isin(configs)
    ]
    if df.empty:
        return pd.DataFrame()
    df = df.assign(letter=df["metric"].str.split(":").str[1])
    table = df.pivot_table(index="letter", columns="config", values="value", aggfunc="mean")
    return table[[c for c in configs if c in table.columns]].sort_index()


def absorption_letter_stats(
    results: Results, configs: Sequence[str] = (TOPK, HSAE), measure: str = "absorption_fraction"
) -> pd.DataFrame:
    """mean, std (over seeds; NaN for one) and n of a per-letter absorption measure
    (`absorption_fraction` or `full_absorption`), indexed by (letter, config)."""
    df = results.tidy[
        results.tidy["metric"].str.startswith(measure + ":") & results.tidy["config"].isin(configs)
    ]
    if df.empty:
        return pd.DataFrame(columns=["mean", "std", "n"])
    df = df.assign(letter=df["metric"].str.split(":").str[1])
    return df.groupby(["letter", "config"])["value"].agg(
        mean="mean", std=lambda v: v.std(ddof=1) if len(v) > 1 else np.nan, n="size"
    )


def frontier_method(config: str) -> str | None:
    """The curve of the sparsity-fidelity frontier a configuration belongs to: its family for the
    baselines (TopK, BatchTopK, L1 at every sparsity level), "stage1" for the HierarchicalSAE's
    stage 1, "hierarchical" for the full HierarchicalSAE (stage 5 and any other run of its family,
    e.g. a sweep over lambda_0). None for stages 2-4 (their own figure) and for alternative readings
    (`name__field-value`, notebook 11)."""
    if "__" in config:
        return None
    fam = family(config)
    if fam != "hierarchical":
        return fam
    stage = config[len("stage") :].split("_")[0] if config.startswith("stage") else ""
    if stage == "1":
        return "stage1"
    return None if stage in ("2", "3", "4") else "hierarchical"


def frontier_points(results: Results, metrics: Sequence[str]) -> pd.DataFrame:
    """One row per configuration: family, frontier curve (`frontier_method`), seeds, L0 and each
    metric as mean and std over seeds (std NaN for one seed)."""
    rows = []
    for c in results.configs:
        l0 = results.values("l0", c)
        if l0.size == 0:
            continue
        row = {
            "config": c,
            "label": results.label(c),
            "family": family(c),
            "method": frontier_method(c),
            "n": l0.size,
            "l0": l0.mean(),
            "l0_std": l0.std(ddof=1) if l0.size > 1 else np.nan,
        }
        for m in metrics:
            v = results.values(m, c)
            row[m] = v.mean() if v.size else np.nan
            row[f"{m}_std"] = v.std(ddof=1) if v.size > 1 else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def fmt_number(x: float) -> str:
    """Compact and never scientific: thousands separated, three significant digits below 10."""
    if x is None or not math.isfinite(x):
        return "nan"
    a = abs(x)
    if a >= 1000 or (a >= 1 and x == round(x)):
        return f"{x:,.0f}"
    if a >= 10:
        return f"{x:.1f}"
    if a >= 1:
        return f"{x:.3g}"
    # three significant digits, never in scientific notation (0.0000358, not 3.58e-05)
    return np.format_float_positional(x, precision=3, fractional=False, trim="-")


def markdown_table(df: pd.DataFrame, columns: dict[str, str] | None = None) -> str:
    """A GitHub Markdown table (no `tabulate` needed); floats as `fmt_number`."""
    columns = columns or {c: c for c in df.columns}

    def cell(v) -> str:
        text = fmt_number(v) if isinstance(v, float) else str(v)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(columns.values()) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r[c]) for c in columns) + " |" for _, r in df.iterrows()]
    return "\n".join(lines)


def write_table(
    table: pd.DataFrame, name: str, profile_name: str, out_dir: Path = FIGURES_DIR
) -> dict[str, Path]:
    """`<name>_<profile>.md` (GitHub Markdown) and `.csv`, atomically."""
    paths = {
        "md": out_dir / f"{name}_{profile_name}.md",
        "csv": out_dir / f"{name}_{profile_name}.csv",
    }
    write_text_atomic(paths["md"], markdown_table(table.reset_index()) + "\n")
    write_text_atomic(paths["csv"], table.to_csv())
    return paths
