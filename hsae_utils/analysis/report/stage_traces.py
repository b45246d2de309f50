"""What the profile's stage runs show of their mechanism (notebooks 03-07), read from their training
logs, events and checkpoints: sentences with the measured numbers, so a notebook never prints an
empty table or types a number in."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from hsae_utils.method import mechanisms as mech
from hsae_utils.method.checkpoint import load_sae


def events_in_words(runs: Sequence, acts_by: str | None = None, previous: str = "") -> str:
    """The resample and merge events of each seed's run, in words ("no events" when none). With
    `acts_by` ("resample" or "merge", the event through which the stage's mechanism changes the
    weights): what it means when no seed has one (the stage then trains exactly as `previous`)."""
    lines = []
    for r in runs:
        kinds = {}
        for ev in r.events:
            n = ev.get("n_latents", len(ev.get("pairs", [])))
            kinds.setdefault(ev.get("event"), []).append((ev["step"], n))
        if not kinds:
            lines.append(f"seed {r.seed}: no resample or merge events")
            continue
        parts = [
            f"{len(evs)} {kind} event(s), {sum(n for _, n in evs)} latent(s) "
            f"(steps {', '.join(str(s) for s, _ in evs[:8])}{', ...' if len(evs) > 8 else ''})"
            for kind, evs in kinds.items()
        ]
        lines.append(f"seed {r.seed}: " + "; ".join(parts))
    if acts_by and not any(ev.get("event") == acts_by for r in runs for ev in r.events):
        lines.append(
            f"No {acts_by} event in any seed: the mechanism never changed the weights, so "
            f"this run is step for step the run of {previous or 'the previous stage'} "
            f"(twins in notebook 02's shared pass)."
        )
    return "\n".join(lines)


def l0_in_words(runs: Sequence, d_sae: int) -> str:
    """L0 at the middle and at the end of each seed's training log, against the dictionary size."""
    lines = []
    for r in runs:
        rows = [row for row in r.log if "l0" in row]
        if not rows:
            lines.append(f"seed {r.seed}: no L0 logged")
            continue
        mid, end = rows[len(rows) // 2], rows[-1]
        lines.append(
            f"seed {r.seed}: L0 {mid['l0']:.1f} at step {mid['step']}, {end['l0']:.1f} at "
            f"step {end['step']} ({end['l0'] / d_sae:.0%} of the {d_sae} latents)"
        )
    return "\n".join(lines)


def dead_in_words(runs: Sequence) -> str:
    """The dead latents each seed's run logged (its own criterion) at its last logged step and at
    most, with the number of latents its resampling re-initialised."""
    lines = []
    for r in runs:
        dead = [row["dead"] for row in r.log if "dead" in row]
        resampled = sum(ev.get("n_latents", 0) for ev in r.events if ev.get("event") == "resample")
        lines.append(
            f"seed {r.seed}: dead latents at the end {dead[-1] if dead else 'n/a'}, at most "
            f"{max(dead) if dead else 'n/a'}; {resampled} latent(s) resampled"
        )
    return "\n".join(lines)


def alpha_in_words(runs: Sequence, lo: float = 0.1, hi: float = 2.0) -> str:
    """Where the adaptive factor alpha_t sat over all logged steps of the runs (min, median, max,
    share of steps at each clamp), and what that makes of the mechanism."""
    alpha = np.array([row["alpha_t"] for r in runs for row in r.log if "alpha_t" in row], float)
    if alpha.size == 0:
        return "no alpha_t logged (adaptive sparsity is off in this run)"
    # logged from float32: 0.1 comes back as 0.10000000149
    at_lo = np.mean(np.isclose(alpha, lo, rtol=1e-6) | (alpha < lo))
    at_hi = np.mean(np.isclose(alpha, hi, rtol=1e-6) | (alpha > hi))
    med = float(np.median(alpha))
    if max(at_lo, at_hi) > 0.5:
        meaning = (
            f"alpha_t sat at its {'lower' if at_lo > at_hi else 'upper'} clamp on most "
            f"steps: the mechanism mostly rescales the L1 weight by a constant"
        )
    else:
        meaning = (
            f"alpha_t sat between its clamps on most steps (median {med:.3g}): the L1 "
            f"weight followed the reconstruction error, as Eq. 5 intends"
        )
    return (
        f"alpha_t over {alpha.size} logged steps: min {alpha.min():.3g}, median {med:.3g}, max "
        f"{alpha.max():.3g}; at the lower clamp {lo} on {at_lo:.0%}, at the upper clamp {hi} "
        f"on {at_hi:.0%}.\nSo {meaning}."
    )


def alpha_logs(runs: Sequence) -> dict[int, list[dict]]:
    """{seed: the run's metric rows}, for `worked_examples.plot_alpha`."""
    return {r.seed: r.log for r in runs}


def max_decoder_cosine(folder) -> np.ndarray:
    """For each latent of the exported SAE in `folder`, its largest decoder cosine similarity to
    any other latent (the quantity the stage-5 merge rule compares with 0.9)."""
    sae = load_sae(folder)
    with torch.no_grad():
        sim_FF = mech.latent_similarity(sae, "decoder")
        sim_FF.fill_diagonal_(-1.0)
    return sim_FF.max(1).values.numpy()


def plot_max_cosine(per_seed: dict[int, np.ndarray], threshold: float = 0.9):
    """Histogram of each latent's largest decoder cosine to another latent, one per seed, with
    the merge threshold."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    bins = np.linspace(min(0.0, min(v.min() for v in per_seed.values())), 1.0, 51)
    for i, (seed, v) in enumerate(per_seed.items()):
        ax.hist(v, bins=bins, histtype="step", color=f"C{i}", lw=1.3, label=f"seed {seed}")
    ax.axvline(threshold, color="C3", ls="--", label=f"merge threshold {threshold}")
    ax.set(
        xlabel="largest decoder cosine similarity to another latent",
        ylabel="latents",
        title="Stage 5: how close the nearest latent is",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def max_cosine_in_words(per_seed: dict[int, np.ndarray], threshold: float = 0.9) -> str:
    lines = []
    for seed, v in per_seed.items():
        lines.append(
            f"seed {seed}: largest decoder cosine between two latents {v.max():.3f}, "
            f"median over latents {np.median(v):.3f}; {int((v > threshold).sum())} latent(s) "
            f"above {threshold}"
        )
    return "\n".join(lines)
