"""The evaluation of notebook 08: every SAE of a profile on its validation split, absorption task
and probing tasks; the model-side work once, per SAE only the SAE passes.

Results are a tidy table: run, config, seed, metric, value. Headline metrics have plain names;
details carry a suffix after a colon: `absorption_fraction:a`, `sae_top_1_accuracy:sentiment`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
from tqdm.auto import tqdm

from hsae_utils.config import Profile
from hsae_utils.data.activations import ActivationStore
from hsae_utils.data.model import load_model, model_fingerprint
from hsae_utils.evals import absorption as absorption_mod
from hsae_utils.evals import probing as probing_mod
from hsae_utils.evals.adapter import adapter_identity
from hsae_utils.evals.core import build_splice_data, reconstruction_metrics, splice_metrics
from hsae_utils.evals.loading import SAERun, find_saes, load_adapter
from hsae_utils.io import atomic_path, write_json_atomic
from hsae_utils.timing import Timer

FAMILIES = ("core", "absorption", "probing")


@dataclass
class EvaluationResult:
    results: Any  # tidy pandas DataFrame: run, config, seed, metric, value
    runs: list[SAERun]
    absorption_letters: Any  # per-letter DataFrame (run, config, seed, letter, ...)
    probing_tasks: Any  # per-dataset DataFrame
    notes: list[str]
    timer: Timer

    def summary(self, metrics: Iterable[str] | None = None):
        """Mean (and std over seeds) per configuration of headline metrics, configs as rows."""
        df = self.results
        df = df[~df["metric"].str.contains(":")]
        if metrics is not None:
            df = df[df["metric"].isin(list(metrics))]
        order = list(dict.fromkeys(r.config for r in self.runs))
        table = df.pivot_table(index="config", columns="metric", values="value", aggfunc="mean")
        return table.reindex([c for c in order if c in table.index])


def eval_cache_root(profile: Profile) -> Path:
    return profile.output_dir / "eval_cache"


def _tidy_rows(run: SAERun, metrics: Mapping[str, Any]) -> list[dict]:
    """Numeric, finite metrics as rows (an undefined metric, e.g. a letter without probe-positive
    test words, is left out rather than written as NaN)."""
    rows = []
    for k, v in metrics.items():
        if isinstance(v, (bool, np.bool_)):
            v = float(v)
        if isinstance(v, (int, float, np.integer, np.floating)) and math.isfinite(v):
            rows.append(
                {
                    "run": run.run,
                    "config": run.config,
                    "seed": run.seed,
                    "metric": k,
                    "value": float(v),
                }
            )
    return rows


def evaluate_profile(
    profile: Profile,
    runs: list[SAERun] | None = None,
    model=None,
    families: Iterable[str] = FAMILIES,
    progress: bool = True,
    device: str | None = None,
    rebuild_cache: bool = False,
) -> EvaluationResult:
    """Evaluate every SAE of `runs` (default: all under `profile.sae_dir`) on the profile's
    validation split, absorption task and probing tasks.

    The model-side work is done (or read from `eval_cache`) once; per SAE only the SAE passes and
    the splice through the layers after the hook run. Prints the time split at the end.
    `rebuild_cache`: recompute the model-side entries of `eval_cache` (run_all.sh --force); a
    damaged entry is rebuilt either way.
    """
    import pandas as pd  # slow to import; only the orchestration needs it

    families = tuple(families)
    unknown = set(families) - set(FAMILIES)
    if unknown:
        raise ValueError(f"Unknown metric families {sorted(unknown)}; valid: {FAMILIES}.")
    runs = find_saes(profile.sae_dir) if runs is None else runs
    timer = Timer()
    notes: list[str] = []
    if not runs:
        empty = pd.DataFrame(columns=["run", "config", "seed", "metric", "value"])
        return EvaluationResult(empty, [], pd.DataFrame(), pd.DataFrame(), ["no SAEs found"], timer)

    device = device or profile.resolve_device()
    root = eval_cache_root(profile)
    with timer.model("load model"):
        if model is None:
            model = load_model(profile, device=device)
        fingerprint = model_fingerprint(profile)
    layer = profile.layer

    valid = ActivationStore(profile.cache_dir / "validation", cache_dtype=profile.cache_dtype)
    with timer.model("read validation activations"):
        x_valid = valid.read_all()  # raw rows as fp32 (bf16 caches too), special tokens out
        mean_valid = x_valid.double().mean(0)

    splice = absorption_data = probing_data = None
    if "core" in families:
        with timer.model("splice set: layer output, clean / zero-ablated CE and KL"):
            tokens = valid.tokens()[: profile.n_eval_contexts]
            splice = build_splice_data(
                model,
                tokens,
                layer,
                valid.manifest["special_token_ids"],
                massive_factor=valid.manifest.get("massive_norm_factor"),
                cache_root=root,
                fingerprint=fingerprint,
                batch_contexts=profile.eval_batch_contexts,
                progress=progress,
                rebuild=rebuild_cache,
            )
        notes.append(f"splice set: {'reused' if splice.reused else 'built'} {splice.folder}")
    if "absorption" in families:
        with timer.model("absorption: word activations and ground-truth probe"):
            absorption_data = absorption_mod.build_absorption_data(
                model,
                profile,
                cache_root=root,
                fingerprint=fingerprint,
                progress=progress,
                rebuild=rebuild_cache,
            )
        notes.append(
            f"absorption data: {'reused' if absorption_data.reused else 'built'} "
            f"{absorption_data.folder}"
        )
        notes.extend(absorption_data.notes)
    if "probing" in families:
        with timer.model("probing: text activations and LLM probes"):
            probing_data = probing_mod.build_probing_data(
                model,
                profile,
                cache_root=root,
                fingerprint=fingerprint,
                progress=progress,
                rebuild=rebuild_cache,
            )
        notes.append(
            f"probing data: {'reused' if probing_data.reused else 'built'} {probing_data.folder}"
        )

    rows, letter_rows, task_rows, adapters = [], [], [], {}
    same_as: dict[str, str] = {}  # run -> the earlier run whose SAE computes the same function
    first: dict[str, str] = {}
    for run in runs:
        with timer.sae(run.run, "load"):
            adapter = load_adapter(run, device, profile, valid.manifest["normalization"])
            key = adapter_identity(adapter)
        if key is not None and key in first:  # evaluated once: its twin's rows are its own
            same_as[run.run] = first[key]
            continue
        if key is not None:
            first[key] = run.run
        adapters[run.run] = adapter
    if same_as:
        notes.append(
            "bit-identical SAEs evaluated once: "
            + "; ".join(f"{run} = {twin}" for run, twin in same_as.items())
        )
    unique = [run for run in runs if run.run not in same_as]
    pooled = {}
    if probing_data is not None:
        # one pass over the stored probing rows for all SAEs (each chunk read and converted once);
        # the pass's time is shared equally among them
        t0 = time.perf_counter()
        pooled = dict(
            zip(adapters, probing_mod.sae_features_many(list(adapters.values()), probing_data))
        )
        for name in adapters:
            timer.add_sae(name, "sparse probing", (time.perf_counter() - t0) / len(adapters))
    for run in tqdm(unique, disable=not progress, desc="SAEs"):
        adapter = adapters[run.run]
        metrics: dict[str, Any] = {}
        if "core" in families:
            with timer.sae(run.run, "reconstruction"):
                metrics.update(reconstruction_metrics(adapter, x_valid, mean_raw_D=mean_valid))
        if absorption_data is not None:
            with timer.sae(run.run, "absorption"):
                summary, per_letter = absorption_mod.evaluate_absorption(
                    adapter, absorption_data, seed=profile.eval_seed
                )
            metrics.update(summary)
            for r in per_letter:
                letter_rows.append({"run": run.run, "config": run.config, "seed": run.seed, **r})
                metrics[f"absorption_fraction:{r['letter']}"] = r["mean_absorption_fraction"]
                metrics[f"full_absorption:{r['letter']}"] = r["full_absorption_rate"]
        if probing_data is not None:
            with timer.sae(run.run, "sparse probing"):
                summary, per_task = probing_mod.evaluate_sparse_probing(
                    adapter, probing_data, k_values=profile.probe_k_values, features=pooled[run.run]
                )
            metrics.update(summary)
            for r in per_task:
                task_rows.append({"run": run.run, "config": run.config, "seed": run.seed, **r})
                for k, v in r.items():
                    if k.endswith("accuracy"):
                        metrics[f"{k}:{r['dataset']}"] = v
        rows.append((run, metrics))
    if splice is not None:
        spliced = splice_metrics(
            model,
            splice,
            adapters,
            layer,
            batch_contexts=profile.eval_batch_contexts,
            timer=timer,
            progress=progress,
        )
        for run, metrics in rows:
            metrics.update(spliced[run.run])
    by_run = {run.run: metrics for run, metrics in rows}
    for run in runs:  # the twins, in the order found, with their own run / config / seed
        if run.run in same_as:
            twin = same_as[run.run]
            rows.append((run, dict(by_run[twin])))
            for table in (letter_rows, task_rows):
                table += [
                    {**r, "run": run.run, "config": run.config, "seed": run.seed}
                    for r in list(table)
                    if r["run"] == twin
                ]
    order = {run.run: i for i, run in enumerate(runs)}
    rows.sort(key=lambda rm: order[rm[0].run])
    letter_rows.sort(key=lambda r: order[r["run"]])
    task_rows.sort(key=lambda r: order[r["run"]])
    tidy = [row for run, metrics in rows for row in _tidy_rows(run, metrics)]
    result = EvaluationResult(
        results=pd.DataFrame(tidy, columns=["run", "config", "seed", "metric", "value"]),
        runs=list(runs),
        absorption_letters=pd.DataFrame(letter_rows),
        probing_tasks=pd.DataFrame(task_rows),
        notes=notes,
        timer=timer,
    )
    if progress:
        print(timer.summary())
    return result


def save_results(
    result: EvaluationResult, results_dir: str | Path, profile: Profile | None = None
) -> dict[str, Path]:
    """Write the tidy table (CSV + JSON) and the detail tables to `results_dir`."""
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "csv": results_dir / "evaluation.csv",
        "json": results_dir / "evaluation.json",
        "runs": results_dir / "evaluation_runs.csv",
        "absorption_letters": results_dir / "absorption_per_letter.csv",
        "probing_tasks": results_dir / "sparse_probing_per_dataset.csv",
        "timing": results_dir / "evaluation_timing.json",
    }
    import pandas as pd  # heavy import, only for tables

    def write_csv(df, path):
        with atomic_path(path) as tmp:
            df.to_csv(tmp, index=False)

    write_csv(result.results, paths["csv"])
    write_json_atomic(
        paths["json"],
        {
            "profile": profile.name if profile else None,
            "columns": ["run", "config", "seed", "metric", "value"],
            "rows": result.results.to_dict(orient="records"),
            "notes": result.notes,
        },
    )
    write_csv(
        pd.DataFrame(
            [
                {
                    "run": r.run,
                    "config": r.config,
                    "seed": r.seed,
                    "label": r.label,
                    "architecture": r.architecture,
                    "folder": str(r.folder or ""),
                    "external": r.external or "",
                }
                for r in result.runs
            ]
        ),
        paths["runs"],
    )
    write_csv(result.absorption_letters, paths["absorption_letters"])
    write_csv(result.probing_tasks, paths["probing_tasks"])
    write_json_atomic(paths["timing"], result.timer.to_dict())
    return paths
