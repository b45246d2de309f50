"""Figures shared by the notebooks."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np

CURVES = (("loss", "loss"), ("l0", "L0 (active latents / token)"),
          ("dead", "dead features"), ("l1_weight", "lambda_t * alpha_t"))


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
    fig, axes = plt.subplots(1, len(CURVES), figsize=(4 * len(CURVES), 3.2))
    names = list(dict.fromkeys(r.name for r in runs))
    for r in runs:
        color = f"C{names.index(r.name)}"
        for ax, (key, label) in zip(axes, CURVES):
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


def events_table(runs: Sequence):
    """Resample and merge events of each run as a pandas DataFrame (one row per event)."""
    import pandas as pd

    rows = []
    for r in runs:
        for ev in r.events:
            rows.append({"run": r.name, "seed": r.seed, "step": ev["step"], "event": ev.get("event"),
                         "latents": ev.get("n_latents", len(ev.get("pairs", [])))})
    return pd.DataFrame(rows, columns=["run", "seed", "step", "event", "latents"])
