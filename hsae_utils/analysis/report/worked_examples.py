"""Small worked examples of the five mechanisms (notebooks 03-07), each computed by the package's
own functions (`method.schedules`, `method.mechanisms`, `method.saes.hierarchical`) on numbers
small enough to check by eye, before the notebook shows the mechanism in the profile's runs."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from hsae_utils.method import mechanisms as mech
from hsae_utils.method.saes.hierarchical import HierarchicalSAE, HierarchicalSAEConfig
from hsae_utils.method.schedules import adaptive_alpha, default_lambda0, linear_decay

# ----------------------------------------------------------------------------- stage 1


def lambda_schedule(d_sae: int, total_steps: int) -> pd.DataFrame:
    """Eq. 3 at every step: lambda_t = lambda_0 (1 - t/T), lambda_0 = 1/sqrt(d_sae)."""
    lam0 = default_lambda0(d_sae)
    return pd.DataFrame(
        {
            "step": np.arange(total_steps),
            "lambda_t": [linear_decay(lam0, t, total_steps) for t in range(total_steps)],
        }
    )


def plot_lambda_schedule(d_sae: int, total_steps: int, logs: list[list[dict]] = ()):
    """The schedule as a line; the lambda_t each run logged while training as dots on it."""
    sched = lambda_schedule(d_sae, total_steps)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(
        sched["step"],
        sched["lambda_t"],
        "k-",
        lw=1.5,
        label=f"Eq. 3: λ_0 (1 - t/T), λ_0 = 1/√{d_sae}, T = {total_steps}",
    )
    for i, log in enumerate(logs):
        rows = [r for r in log if "lambda_t" in r]
        # a log row's "step" counts completed steps: its lambda_t is that of t = step - 1
        ax.plot(
            [r["step"] - 1 for r in rows],
            [r["lambda_t"] for r in rows],
            ".",
            ms=5,
            color=f"C{i}",
            label="logged by the run" if i == 0 else None,
        )
    ax.set(
        xlabel="training step t",
        ylabel="L1 coefficient λ_t",
        title="Stage 1: the linear sparsity schedule",
    )
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- stage 2


@torch.no_grad()
def dead_latent_example(
    dead: int = 2,
    steps: int = 10,
    batch: int = 64,
    d_in: int = 8,
    d_sae: int = 6,
    n_loud: int = 4,
    seed: int = 0,
) -> dict:
    """A toy stage-2 SAE whose latent `dead` is forced dead (encoder bias -100), fed `steps`
    random batches through its own loss and `after_step` with `resample_every = steps`; no
    gradient step, so only the mechanism changes the weights. The first `n_loud` inputs of each
    batch are 4x larger (16x the squared error), so the draw proportional to the squared loss
    should pick one of them. Returns the resample event, the drawn input (its loss rank in the
    batch) and a before/after table of the latent."""
    cfg = HierarchicalSAEConfig.for_stage(2, d_in=d_in, d_sae=d_sae, resample_every=steps)
    sae = HierarchicalSAE(cfg, seed=seed)
    g = torch.Generator().manual_seed(seed)
    sae.b_enc[dead] = -100.0
    probe_BD = torch.randn(batch, d_in, generator=g)  # a fixed batch to read firing on

    def state():
        fires = int((sae.encode(probe_BD)[:, dead] > 0).sum())
        return {
            "fires on (of a fixed batch)": f"{fires} / {batch} tokens",
            "encoder bias": round(float(sae.b_enc[dead]), 3),
            "|encoder column|": round(float(sae.W_enc[:, dead].norm()), 3),
            "decoder row (first 3 dims)": np.round(sae.W_dec[dead, :3].tolist(), 3).tolist(),
        }

    before, fired, events = state(), 0, []
    for step in range(steps):
        x_BD = torch.randn(batch, d_in, generator=g)
        x_BD[:n_loud] *= 4.0
        out = sae.loss(x_BD, step, steps)
        fired += int(out.fired_F[dead])
        events += sae.after_step(step, x_BD, out, generator=g)
    rate = fired / (steps * batch)
    # the drawn input is the one whose normalized direction became the decoder row
    cos_B = torch.nn.functional.normalize(x_BD, dim=-1) @ sae.W_dec[dead]
    drawn = int(cos_B.argmax())
    rank = int((out.sq_err_B > out.sq_err_B[drawn]).sum()) + 1
    after = state()
    table = pd.DataFrame({"before": before, "after": after})
    return {
        "events": events,
        "rate_before": rate,
        "drawn_input": drawn,
        "loss_rank": rank,
        "batch": batch,
        "n_loud": n_loud,
        "cos_with_input": float(cos_B[drawn]),
        "table": table,
        "mean_enc_norm_others": float(
            sae.W_enc[:, [i for i in range(d_sae) if i != dead]].norm(dim=0).mean()
        ),
    }


# ----------------------------------------------------------------------------- stage 3


TOY_STREAM = (  # (name, firing probability per token before step 150, after it)
    ("steady 5 %", 0.05, 0.05),
    ("5 %, then 0.4 % from step 150", 0.05, 0.004),
    ("never fires", 0.0, 0.0),
)


def window_example(
    steps: int = 300, window: int = 100, tokens: int = 256, min_rate: float = 0.01, seed: int = 0
) -> pd.DataFrame:
    """A toy stream of firing counts (binomial draws, `tokens` per step) for the latents of
    `TOY_STREAM`, fed to `WindowTracker` (Eq. 4) and, for comparison, to stage 2's criterion
    (`FiringCounter`: no firing in the last `window` steps). One row per step and latent."""
    g = torch.Generator().manual_seed(seed)
    tracker, counter = (
        mech.WindowTracker(window, len(TOY_STREAM)),
        mech.FiringCounter(len(TOY_STREAM)),
    )
    rows = []
    for step in range(steps):
        p_F = torch.tensor([a if step < steps // 2 else b for _, a, b in TOY_STREAM])
        fired_F = torch.binomial(torch.full_like(p_F, tokens), p_F, generator=g).long()
        rate_F = mech.step_firing_rate(fired_F, tokens)
        tracker.update(step, rate_F)
        counter.update(fired_F, tokens)
        window_F, dead_F = tracker.rates(), tracker.dead_mask(min_rate)
        never_F = counter.dead_mask(window * tokens)
        for i, (name, _, _) in enumerate(TOY_STREAM):
            rows.append(
                {
                    "step": step + 1,
                    "latent": name,
                    "step_rate": float(rate_F[i]),
                    "window_rate": float(window_F[i]),
                    "dead_window": bool(dead_F[i]),
                    "dead_stage2": bool(never_F[i]),
                }
            )
    return pd.DataFrame(rows)


def first_flagged(df: pd.DataFrame) -> pd.DataFrame:
    """The first step at which each criterion calls each toy latent dead ("-": never)."""
    out = {}
    for name, d in df.groupby("latent", sort=False):
        out[name] = {
            crit: (int(d[d[col]]["step"].min()) if d[col].any() else "-")
            for crit, col in (
                ("window p_i < 0.01 (stage 3)", "dead_window"),
                ("no firing in 100 steps (stage 2)", "dead_stage2"),
            )
        }
    return pd.DataFrame(out).T.rename_axis("toy latent")


def plot_window_example(df: pd.DataFrame, min_rate: float = 0.01, window: int = 100):
    """Per toy latent: the step's firing rate, the window mean p_i and the 0.01 threshold; the
    steps at which p_i < 0.01 (with a full window) shaded."""
    names = list(dict.fromkeys(df["latent"]))
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.2), sharey=True)
    for ax, name in zip(axes, names):
        d = df[df["latent"] == name]
        ax.plot(d["step"], d["step_rate"], color="0.7", lw=0.8, label="rate of the step")
        ax.plot(d["step"], d["window_rate"], "C0", lw=2, label=f"p_i, mean of last {window} steps")
        ax.axhline(min_rate, color="C3", ls="--", lw=1, label=f"threshold {min_rate}")
        ax.axvline(window, color="k", ls=":", lw=1, label="window full")
        ax.fill_between(
            d["step"],
            0,
            1,
            where=d["dead_window"].to_numpy(),
            color="C3",
            alpha=0.15,
            transform=ax.get_xaxis_transform(),
            label="counted dead",
        )
        ax.set(title=name, xlabel="step")
    axes[0].set_ylabel("firing rate (fraction of tokens)")
    axes[0].set_ylim(0, 0.09)
    axes[-1].legend(fontsize=7, loc="upper right")
    fig.suptitle(
        "Stage 3: window tracking of firing rates on a toy stream (256 tokens per step)",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- stage 4


def alpha_curve(l_target: float = 2.5, lo: float = 0.1, hi: float = 2.0) -> pd.DataFrame:
    """Eq. 5, alpha_t = clamp(L_target / L_recon, lo, hi), on a log grid of L_recon."""
    l_recon = np.logspace(-1, 3, 200)
    alpha = adaptive_alpha(torch.tensor(l_recon), l_target, lo, hi).numpy()
    return pd.DataFrame({"l_recon": l_recon, "alpha_t": alpha})


def plot_alpha(
    logs: dict[int, list[dict]], l_target: float = 2.5, lo: float = 0.1, hi: float = 2.0
):
    """Left: Eq. 5 against L_recon, with each logged (L_recon, alpha_t) of the runs on it.
    Right: alpha_t against the step for each seed (`logs`: {seed: metric rows}), its median and
    the two clamps."""
    curve = alpha_curve(l_target, lo, hi)
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.4))
    ax0.plot(
        curve["l_recon"],
        curve["alpha_t"],
        "k-",
        lw=1.5,
        label=f"clamp({l_target} / L_recon, {lo}, {hi})",
    )
    ax0.set_xscale("log")
    all_alpha = []
    for i, (seed, log) in enumerate(logs.items()):
        rows = [r for r in log if "alpha_t" in r and "mse" in r]
        all_alpha += [r["alpha_t"] for r in rows]
        ax0.plot(
            [r["mse"] for r in rows],
            [r["alpha_t"] for r in rows],
            ".",
            color=f"C{i}",
            ms=4,
            label=f"seed {seed}: logged steps",
        )
        ax1.plot(
            [r["step"] for r in rows],
            [r["alpha_t"] for r in rows],
            color=f"C{i}",
            lw=1,
            label=f"seed {seed}",
        )
    if all_alpha:
        ax1.axhline(
            np.median(all_alpha), color="k", lw=1.5, label=f"median {np.median(all_alpha):.3g}"
        )
    for ax in (ax0, ax1):
        for y, name in ((lo, "lower clamp"), (hi, "upper clamp")):
            ax.axhline(y, color="C3", ls="--", lw=0.8)
            ax.annotate(
                name,
                (0.01, y),
                xycoords=("axes fraction", "data"),
                fontsize=7,
                color="C3",
                va="bottom",
            )
        ax.set_ylim(0, hi * 1.1)
        ax.legend(fontsize=7, loc="center right")
    ax0.set(
        xlabel="L_recon (squared error summed over dims, batch mean; log scale)",
        ylabel="α_t (multiplies the L1 weight)",
        title="Eq. 5: α_t against L_recon",
    )
    ax1.set(xlabel="training step", ylabel="α_t", title="α_t while training (stage 4)")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- stage 5


@torch.no_grad()
def merge_example(d_in: int = 8, threshold: float = 0.9, seed: int = 0) -> dict:
    """Six toy latents with random unit decoder rows, except row 4 = row 1 plus a little noise
    (cosine above the threshold) and row 5 = row 2 plus more noise (below it). The merge rule of
    `HierarchicalSAE.after_step` (`latent_similarity`, `find_merge_pairs`, `merge_pairs`) is
    applied to them: returns the similarity matrix, the pairs merged and the merged latent."""
    g = torch.Generator().manual_seed(seed)
    rows_FD = torch.randn(6, d_in, generator=g)
    rows_FD[4] = rows_FD[1] / rows_FD[1].norm() + 0.3 * torch.randn(d_in, generator=g) / d_in**0.5
    rows_FD[5] = rows_FD[2] / rows_FD[2].norm() + 0.6 * torch.randn(d_in, generator=g) / d_in**0.5
    cfg = HierarchicalSAEConfig.for_stage(5, d_in=d_in, d_sae=6, merge_threshold=threshold)
    sae = HierarchicalSAE(cfg, seed=seed)
    sae.W_dec.copy_(torch.nn.functional.normalize(rows_FD, dim=-1))
    sae.W_enc.copy_(sae.W_dec.T)
    old_FD = sae.W_dec.detach().clone()
    sim_FF = mech.latent_similarity(sae, cfg.merge_similarity)
    pairs = mech.find_merge_pairs(sim_FF, threshold)
    freed = mech.merge_pairs(sae, pairs)
    i, j = pairs[0].tolist() if len(pairs) else (None, None)
    merged = (
        {}
        if i is None
        else {
            "cos(merged row, old row i)": float(sae.W_dec[i] @ old_FD[i]),
            "cos(merged row, old row j)": float(sae.W_dec[i] @ old_FD[j]),
            "|merged row|": float(sae.W_dec[i].norm()),
        }
    )
    return {
        "similarity": pd.DataFrame(sim_FF.numpy()).round(3),
        "pairs": pairs.tolist(),
        "freed": freed.tolist(),
        "merged": merged,
        "threshold": threshold,
    }


def plot_similarity(sim: pd.DataFrame, threshold: float = 0.9, pairs=()):
    """The decoder-cosine matrix as a heat map with its numbers; merged pairs boxed."""
    fig, ax = plt.subplots(figsize=(4.4, 3.8))
    im = ax.imshow(sim.to_numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
    for (r, c), v in np.ndenumerate(sim.to_numpy()):
        ax.text(
            c,
            r,
            f"{v:.2f}",
            ha="center",
            va="center",
            fontsize=7,
            weight="bold" if r != c and v > threshold else "normal",
        )
    for i, j in pairs:
        for r, c in ((i, j), (j, i)):
            ax.add_patch(plt.Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, ec="k", lw=2))
    ax.set(
        xlabel="latent",
        ylabel="latent",
        title=f"Decoder cosine similarity (merge if > {threshold}: boxed)",
    )
    ax.title.set_fontsize(9)
    fig.colorbar(im, ax=ax, label="cosine similarity")
    fig.tight_layout()
    return fig
