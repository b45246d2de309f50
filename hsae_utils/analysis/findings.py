"""What we found, in five sentences generated from the results (never typed in): the README's
opening (scripts/update_readme.py) and the top of notebook 09.

Read from the claims table (`figures/claims_<profile>.csv`, notebook 09), Table 1
(`figures/table1_<profile>.csv`) and the HierarchicalSAE runs' exported firing frequencies
(`sparsity.safetensors`, SAELens' log10 frequency per latent). Torch-free.

    1. density: the HierarchicalSAE's L0 against its dictionary size and TopK's, and the share
       of its latents that fire on most training tokens;
    2. its gains at matched sparsity (the baselines' frontier at its own L0);
    3. SAEBench's two absorption measures, and whether they agree;
    4. which of the abstract's numbers no run of the paper backs (the provenance column);
    5. the ablation stages whose results repeat another stage's exactly.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from hsae_utils.analysis.paper_claims import HOLDS
from hsae_utils.analysis.report.tables import FIGURES_DIR, fmt_number
from hsae_utils.config import get_profile
from hsae_utils.runs import HSAE, RUNS

BUSY = 0.5  # "fires on most tokens": a training firing frequency above one half


def _label(config: str) -> str:
    return RUNS[config].label if config in RUNS else config


def _ids(rows: pd.DataFrame) -> str:
    return ", ".join(f"`{i}`" for i in rows["id"])


def busy_share(profile, config: str = HSAE) -> tuple[float, int]:
    """(mean over seeds of the share of `config`'s latents firing on more than BUSY of the
    training tokens, seeds read); (nan, 0) when no run exported its frequencies."""
    from safetensors.numpy import load_file  # numpy only: no torch

    shares = [
        float((10 ** load_file(p)["sparsity"] > BUSY).mean())
        for p in sorted((profile.sae_dir / config).glob("seed*/sparsity.safetensors"))
    ]
    return (float(np.mean(shares)), len(shares)) if shares else (math.nan, 0)


def density_sentence(claims: pd.DataFrame, profile) -> str:
    r = claims.loc["active_features"]
    if not r["n"]:
        return "The HierarchicalSAE's L0 was not measured."
    d_sae = profile.dict_size
    share, n = busy_share(profile)
    busy = (
        f", and {share:.0%} of its latents fire on more than half of the training tokens "
        f"(mean over {n} seed{'s' if n > 1 else ''})"
        if n
        else ""
    )
    dense = ": a dense code" if r["mean"] > d_sae / 2 else ""
    return (
        f"The HierarchicalSAE fires {fmt_number(r['mean'])} of its {d_sae:,} latents per "
        f"token ({r['mean'] / d_sae:.0%}; TopK fires {fmt_number(r['mean_baseline'])})"
        f"{busy}{dense}."
    )


def matched_sentence(claims: pd.DataFrame) -> str:
    ours = claims[
        (claims["config"] == HSAE)
        & (claims["same_as"] == "")
        & (claims["verdict"] == HOLDS)
        & ~claims["matched_l0_reason"].str.startswith(("a sparsity measure", "a timing"))
    ]
    if ours.empty:
        return (
            "No claimed gain of the HierarchicalSAE over TopK holds, so none is left to "
            "check at matched sparsity."
        )
    counts = ours["matched_l0"].value_counts()
    parts = "; ".join(f"{v}: {_ids(ours[ours['matched_l0'] == v])}" for v in counts.index)
    reach = ours[ours["matched_l0_reason"].str.startswith("no baseline run reaches")]
    why = f" ({reach['matched_l0_reason'].iloc[0].partition(': beating')[0]})" if len(reach) else ""
    return (
        f"Of its {len(ours)} gains over TopK that hold (besides firing more latents and "
        "training time), at "
        "matched sparsity (against the "
        f"baselines' frontier at its own L0) {parts}{why}."
    )


def absorption_sentence(claims: pd.DataFrame) -> str:
    if not {"absorption", "absorption_fraction"} <= set(claims.index):
        return "Absorption was not measured."
    full, frac = claims.loc["absorption"], claims.loc["absorption_fraction"]
    if not (full["n"] and frac["n"]):
        return "Absorption was not measured on this profile."
    moved = [np.sign(r["mean"] - r["mean_baseline"]) != 0 for r in (full, frac)]
    said = (
        "show no difference between TopK and the HierarchicalSAE"
        if not any(moved)
        else f"{'agree' if same_direction(full, frac) else 'disagree'} in direction"
    )
    return (
        f"SAEBench's two absorption measures {said}: full "
        f"absorption (one latent takes the whole letter signal; the paper's measure) goes "
        f"{full['ours_baseline']} -> {full['ours']} from TopK to the HierarchicalSAE "
        f"({full['verdict']}), the absorption fraction (the share taken partially) "
        f"{frac['ours_baseline']} -> {frac['ours']} ({frac['verdict']})."
    )


def same_direction(a: pd.Series, b: pd.Series) -> bool:
    """Do two claims' effects (config - baseline means) have the same sign?"""
    return np.sign(a["mean"] - a["mean_baseline"]) == np.sign(b["mean"] - b["mean_baseline"])


def provenance_sentence(claims: pd.DataFrame) -> str:
    if "provenance" not in claims:
        return "The claims table predates the provenance column: rerun notebook 09."
    abstract = claims[claims["source"].str.contains("abstract")]
    unbacked = abstract[abstract["provenance"].str.startswith("no")]
    if unbacked.empty:
        return "Every number of the abstract comes from a run in the paper's public artifacts."
    return (
        f"{len(unbacked)} of the abstract's {len(abstract)} claims are backed by no run in "
        f"the paper's public artifacts: "
        + "; ".join(
            f"`{i}` ({p.split(': ', 1)[-1]})"
            for i, p in zip(unbacked["id"], unbacked["provenance"])
        )
        + "."
    )


def repeats_sentence(claims: pd.DataFrame, table1: pd.DataFrame | None) -> str:
    rows = claims[claims["same_as"] != ""]
    pairs = sorted(
        {
            tuple(sorted((c, claims.loc[s, "config"]), key=list(RUNS).index))
            for c, s in zip(rows["config"], rows["same_as"])
            if c != claims.loc[s, "config"] and c in RUNS and claims.loc[s, "config"] in RUNS
        }
    )
    if not pairs:
        return "Every ablation stage gives results of its own (no stage repeats another's)."
    events = ""
    if table1 is not None and {"Resampled latents (train)", "Merged pairs (train)"} <= set(
        table1.columns
    ):
        t = table1.set_index(table1.columns[0])
        events = "; " + ", ".join(
            f"{_label(b)}: {t.loc[_label(b), 'Resampled latents (train)']} latents resampled, "
            f"{t.loc[_label(b), 'Merged pairs (train)']} pairs merged"
            for _, b in pairs
            if _label(b) in t.index
        )
    said = " and ".join(f"{_label(b)} repeats {_label(a)}" for a, b in pairs)
    return (
        f"The ablation is partly degenerate: {said} exactly, on every metric and seed "
        f"(each counted once in the verdicts){events}."
    )


def findings(profile, figures_dir: Path | None = None) -> list[str]:
    """The five sentences, from the profile's claims table and Table 1 (`profile`: a Profile
    or its name)."""
    profile = get_profile(profile) if isinstance(profile, str) else profile
    figures_dir = Path(figures_dir or FIGURES_DIR)
    path = figures_dir / f"claims_{profile.name}.csv"
    if not path.is_file():
        raise FileNotFoundError(
            f"No claims table at {path}: run notebook 09 first "
            f"(./run_all.sh --profile {profile.name} --only 09)."
        )
    claims = pd.read_csv(
        path, keep_default_na=False, na_values={c: [""] for c in ("mean", "mean_baseline", "n")}
    ).set_index("id", drop=False)
    if "same_as" not in claims:
        claims["same_as"] = ""
    t1_path = figures_dir / f"table1_{profile.name}.csv"
    table1 = pd.read_csv(t1_path, keep_default_na=False) if t1_path.is_file() else None
    return [
        density_sentence(claims, profile),
        matched_sentence(claims),
        absorption_sentence(claims),
        provenance_sentence(claims),
        repeats_sentence(claims, table1),
    ]


def findings_markdown(profile, figures_dir: Path | None = None) -> str:
    """The five sentences as a Markdown list (profile: a Profile or its name)."""
    return "\n".join(f"- {s}" for s in findings(profile, figures_dir)) + "\n"
