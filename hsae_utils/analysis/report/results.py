"""Evaluation results as the tables and figures read them: the tidy table (run, config, seed,
metric, value) of one profile with the labels of its configurations, from a fresh evaluation
(notebook 08) or from `results_dir/evaluation.csv` plus the training logs (notebook 09)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from hsae_utils.config import Profile
from hsae_utils.runs import PAPER_RUNS, family

# The metrics a summary shows and the paired tests compare, in this order.
HEADLINE_METRICS = (
    "explained_variance_legacy",
    "frac_variance_explained",
    "mse_norm",
    "mse",
    "l0",
    "l1",
    "frac_alive",
    "kl_div_with_sae",
    "kl_div_score",
    "ce_loss_score",
    "mean_absorption_fraction_score",
    "mean_full_absorption_score",
    "sae_top_1_test_accuracy",
    "sae_top_5_test_accuracy",
    "sae_top_20_test_accuracy",
)
# Probes on the residual stream itself: the same for every SAE, a reference for the SAE probes.
PROBING_REFERENCES = ("llm_test_accuracy", "llm_top_1_test_accuracy")
TIDY_COLUMNS = ["run", "config", "seed", "metric", "value"]


@dataclass
class Results:
    """The evaluation table of one profile with the labels of its configurations."""

    profile: Profile | None
    tidy: pd.DataFrame  # run, config, seed, metric, value
    labels: dict[str, str]  # config -> label
    checksums: dict[str, str] = field(default_factory=dict)  # run -> sha256 of its SAE weights

    @classmethod
    def from_evaluation(cls, result, profile: Profile | None = None) -> "Results":
        """From an `evals.EvaluationResult` (notebook 08, before anything is written)."""
        return cls(profile, result.results, {r.config: r.label for r in result.runs})

    @property
    def configs(self) -> list[str]:
        """Configurations present, the paper's runs first (in order), then the sweep by family."""
        present = list(dict.fromkeys(self.tidy["config"]))
        main = [c for c in PAPER_RUNS if c in present]
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
                rows.append(
                    {
                        "config": c,
                        "mean": v.mean(),
                        "std": v.std(ddof=1) if v.size > 1 else np.nan,
                        "n": v.size,
                    }
                )
        return pd.DataFrame(rows, columns=["config", "mean", "std", "n"]).set_index("config")

    def has(self, metric: str) -> bool:
        return bool((self.tidy["metric"] == metric).any())

    @property
    def title(self) -> str:
        return f"{self.profile.name} profile" if self.profile is not None else "this evaluation"


def load_results(profile: Profile) -> Results:
    """Read notebook 08's evaluation table, with from the training logs of notebooks 02-07 the
    metric `train_loss` (the loss on the last logged training batch, the paper's "Loss") and the
    mechanisms' events `resampled_latents` / `merged_pairs` (totals over the run), and each run's
    exported weights checksum."""
    path = profile.results_dir / "evaluation.csv"
    if not path.exists():
        raise FileNotFoundError(
            f"No evaluation results at {path}. Run the evaluation notebook first: "
            f"./run_all.sh --profile {profile.name} (or --only 08 once the SAEs are trained)."
        )
    tidy = pd.read_csv(path)
    runs_path = profile.results_dir / "evaluation_runs.csv"
    runs = (
        pd.read_csv(runs_path) if runs_path.exists() else pd.DataFrame(columns=["config", "label"])
    )
    labels = dict(zip(runs["config"], runs["label"]))
    return Results(
        profile,
        pd.concat([tidy, train_losses(profile, runs)], ignore_index=True),
        labels,
        weight_checksums(profile, runs["run"]),
    )


def log_rows(run_folder: Path) -> list[dict]:
    """Every row of a run folder's training log (empty when there is none)."""
    from hsae_utils.method.checkpoint import LOG_NAME  # torch: only when training logs are read
    from hsae_utils.method.train import read_log

    return read_log(run_folder / LOG_NAME)


def metric_rows(run_folder: Path) -> list[dict]:
    """The "metrics" rows of a run folder's training log (empty when there is none)."""
    return [r for r in log_rows(run_folder) if r.get("kind") == "metrics"]


def train_losses(profile: Profile, runs: pd.DataFrame) -> pd.DataFrame:
    """For each evaluated run with a training log: `train_loss` (last logged training loss),
    `resampled_latents` (latents re-initialised by resample events) and `merged_pairs` (latent
    pairs merged), totals over the run."""
    rows = []
    for r in runs.itertuples():
        entries = log_rows(profile.sae_dir / r.run)
        log = [x for x in entries if x.get("kind") == "metrics"]
        if not log:
            continue
        events = [x for x in entries if x.get("kind") == "event"]
        values = {
            "train_loss": log[-1]["loss"],
            "resampled_latents": sum(
                e.get("n_latents", 0) for e in events if e.get("event") == "resample"
            ),
            "merged_pairs": sum(
                len(e.get("pairs", [])) for e in events if e.get("event") == "merge"
            ),
        }
        rows += [
            {"run": r.run, "config": r.config, "seed": r.seed, "metric": m, "value": v}
            for m, v in values.items()
        ]
    return pd.DataFrame(rows, columns=TIDY_COLUMNS)


def weight_checksums(profile: Profile, runs: Iterable[str]) -> dict[str, str]:
    """run -> the sha256 of its exported SAELens weights, recorded in hsae_config.json at export
    (runs exported before the checksums are left out)."""
    import json

    from hsae_utils.method.checkpoint import HSAE_CONFIG, SAE_LENS_WEIGHTS

    out = {}
    for run in runs:
        path = profile.sae_dir / run / HSAE_CONFIG
        if path.is_file():
            sha = json.loads(path.read_text()).get("files", {}).get(SAE_LENS_WEIGHTS)
            if sha:
                out[run] = sha
    return out
