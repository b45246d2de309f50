"""HierarchicalSAE (paper section 4): the ReLU SAE plus five switchable mechanisms."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from hsae_utils.method import mechanisms as mech
from hsae_utils.method.saes.base import StepOutput
from hsae_utils.method.saes.relu import ReLUSAE, ReLUSAEConfig
from hsae_utils.method.schedules import adaptive_alpha, default_lambda0, linear_decay
from hsae_utils.method.stages import stage_switches


@dataclass
class HierarchicalSAEConfig(ReLUSAEConfig):
    """Switches and parameters of the HierarchicalSAE; defaults = the paper's full model.

    l1_coefficient: lambda_0; None means 1/sqrt(d_sae) (section 4.2: 1/sqrt(k), k the dictionary
        size; section 5.4: 1/sqrt(2304)).
    """

    l1_coefficient: float | None = None  # type: ignore[assignment]
    # 1. Eq. 3: lambda_t = lambda_0 (1 - t/T); off: constant lambda_0
    linear_sparsity: bool = True
    # 2. resample latents that did not fire in the last `resample_every` steps
    resampling: bool = True
    resample_every: int = 100
    resample_enc_scale: float = 0.2
    # 3. Eq. 4: with resampling, the criterion becomes p_i < dead_rate over the window
    window_tracking: bool = True
    window_size: int = 100
    dead_rate: float = 0.01
    firing_reading: str = "frequency"  # "frequency" | "any"
    # 4. Eq. 5-6: loss = recon + lambda_t alpha_t L1
    adaptive_sparsity: bool = True
    l_target: float = 2.5
    alpha_min: float = 0.1
    alpha_max: float = 2.0
    recon_units: str = "sum"  # "sum" (per-token sum over dims, Eq. 6) | "mean" (per element)
    # 5. Eq. 7: merge latents with cosine similarity > merge_threshold every merge_every steps
    clustering: bool = True
    merge_every: int = 100
    merge_threshold: float = 0.9
    merge_similarity: str = "decoder"  # "decoder" | "encoder" | "both"
    merge_reinit: str = "resample"  # "resample" | "zero"

    def __post_init__(self):
        super().__post_init__()
        intervals = {k: getattr(self, k) for k in ("resample_every", "window_size", "merge_every")}
        if any(v <= 0 for v in intervals.values()):
            raise ValueError(f"HierarchicalSAEConfig: intervals must be positive, got {intervals}.")
        if self.l1_coefficient is None:
            self.l1_coefficient = default_lambda0(self.d_sae)
        for name, value, allowed in (
            ("firing_reading", self.firing_reading, ("frequency", "any")),
            ("recon_units", self.recon_units, ("sum", "mean")),
            ("merge_similarity", self.merge_similarity, ("decoder", "encoder", "both")),
            ("merge_reinit", self.merge_reinit, ("resample", "zero")),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")

    @classmethod
    def for_stage(cls, stage: int, d_in: int, d_sae: int, **kwargs: Any) -> "HierarchicalSAEConfig":
        return cls(d_in=d_in, d_sae=d_sae, **{**stage_switches(stage), **kwargs})


class HierarchicalSAE(ReLUSAE):
    """ReLU SAE (Eqs. 1-2) trained with the loss of Eq. 6, recon + lambda_t alpha_t ||z||_1,
    and latent management after the optimizer step. Each mechanism has a switch in the config.

    Interpretations of what the paper leaves open (each a config field, default first):
    - lambda_0 = 1/sqrt(d_sae) (`l1_coefficient=None`); with `linear_sparsity` off it stays
      constant. lambda_t reaches 0 at t = T (Eq. 3 as written; the last step, t = T - 1, has
      lambda_0 / T).
    - Resampling (Anthropic, April 2023): dead latents are re-initialised from inputs of the current
      batch drawn with probability proportional to their squared reconstruction loss; decoder row
      = normalised input, encoder column = the same direction x 0.2 x the mean encoder norm of the
      other latents, encoder bias 0, their Adam moments reset. Checked every `resample_every` steps.
      Without window tracking a latent is dead if it did not fire in the last `resample_every`
      steps.
    - Window tracking (Eq. 4): the per-step term 1[z_i^(j) > 0] is read as the fraction of the
      step's tokens on which latent i fired (`firing_reading="frequency"`; "any" = fired at least
      once in step j). p_i is the mean over the last `window_size` steps; p_i < `dead_rate` replaces
      the resampling criterion, for latents whose window is full (a resampled latent gets a
      fresh window). On its own (without resampling) it only changes the logged dead count.
    - Adaptive sparsity (Eq. 5): L_recon is the detached reconstruction term of Eq. 6 on the
      current batch, per-token sum over dimensions, batch mean (`recon_units="sum"`; "mean" = per
      element, i.e. divided by d_in). Scale check: inputs normalized to E||x||^2 = d make the
      "sum" L_recon about (1 - EV) d, so alpha = 2.5 / ((1 - EV) d) sits at its 0.1 floor while
      EV < 1 - 25/d and leaves it only for a close fit (at `local`, d = 576 and EV ~0.99: between
      the clamps; notebook 06 plots the trace); in "mean" units L_recon < 1.25 and alpha sits at
      2.0.
    - Clustering (Eq. 7): cosine similarity of decoder rows (`merge_similarity="decoder"`; they are
      the feature directions), pairs above `merge_threshold` merged greedily, most similar first,
      each latent in at most one pair per round; latent i (lower index) gets the average of the
      encoder columns, encoder biases and decoder rows (row renormalised); the freed latent j is
      re-initialised like a resampled latent (`merge_reinit="resample"`; "zero" zeroes it) and
      its Adam moments reset; latent i keeps its optimizer state and statistics. Merging runs
      before resampling when both fall on the same step, and both draw from the
      same batch without replacement. No event runs after the last step (t = T): a latent
      re-initialised there would never be trained, only exported.
    """

    config_class = HierarchicalSAEConfig
    sae_lens_architecture = "standard"
    cfg: HierarchicalSAEConfig
    # Config fields of mechanisms that change the weights only through events (a resample, a
    # merge): two SAEs that differ only here take identical gradient steps until one of them
    # acts, so `train_many` computes those steps once (`train_many.pair_twins`).
    trajectory_neutral_fields = (
        "resampling",
        "resample_every",
        "resample_enc_scale",
        "window_tracking",
        "window_size",
        "dead_rate",
        "firing_reading",
        "clustering",
        "merge_every",
        "merge_threshold",
        "merge_similarity",
        "merge_reinit",
    )

    def __init__(self, cfg: HierarchicalSAEConfig, seed: int = 0):
        super().__init__(cfg, seed)
        if cfg.window_tracking:
            self.window = mech.WindowTracker(cfg.window_size, cfg.d_sae)

    def l1_weight(
        self, step: int, total_steps: int, l_recon: Tensor
    ) -> tuple[float, Tensor | float]:
        cfg = self.cfg
        lam = (
            linear_decay(cfg.l1_coefficient, step, total_steps)
            if cfg.linear_sparsity
            else cfg.l1_coefficient
        )
        if not cfg.adaptive_sparsity:
            return lam, 1.0
        l_ref = l_recon if cfg.recon_units == "sum" else l_recon / cfg.d_in
        return lam, adaptive_alpha(l_ref, cfg.l_target, cfg.alpha_min, cfg.alpha_max)

    def dead_mask(self) -> Tensor:
        if self.cfg.window_tracking:
            return self.window.dead_mask(self.cfg.dead_rate)
        return super().dead_mask()

    def resample_mask(self, n_tokens: int) -> Tensor:
        """Latents the resampler treats as dead now."""
        if self.cfg.window_tracking:
            return self.window.dead_mask(self.cfg.dead_rate)
        return self.firing.dead_mask(self.cfg.resample_every * n_tokens)

    @torch.no_grad()
    def after_step(
        self,
        step: int,
        x_BD: Tensor,
        out: StepOutput,
        generator: torch.Generator | None = None,
        total_steps: int | None = None,
    ) -> list[dict[str, Any]]:
        events = super().after_step(step, x_BD, out, generator, total_steps)
        cfg, done, B = self.cfg, step + 1, x_BD.shape[0]
        if cfg.window_tracking:
            self.window.update(step, mech.step_firing_rate(out.fired_F, B, cfg.firing_reading))
        if total_steps is not None and done >= total_steps:
            # No event after the last step: a latent re-initialised then would be exported
            # untrained (a random direction with a large encoder), which wrecks fidelity.
            return events

        to_init = []  # latents to re-initialise from high-loss inputs, in one draw
        if cfg.clustering and done % cfg.merge_every == 0:
            sim_FF = mech.latent_similarity(self, cfg.merge_similarity)
            pairs_P2 = mech.find_merge_pairs(sim_FF, cfg.merge_threshold)
            if len(pairs_P2):
                freed_P = mech.merge_pairs(self, pairs_P2)
                if cfg.merge_reinit == "zero":
                    mech.zero_latents(self, freed_P)
                else:
                    to_init.append(freed_P)
                self._forget(freed_P)
                events.append(
                    {
                        "event": "merge",
                        "step": done,
                        "pairs": pairs_P2.tolist(),
                        "reset": freed_P.tolist(),
                    }
                )
        if cfg.resampling and done % cfg.resample_every == 0:
            dead_L = self.resample_mask(B).nonzero().squeeze(1)
            if to_init:  # latents freed by a merge this step are re-initialised once, not twice
                dead_L = dead_L[~torch.isin(dead_L, to_init[0])]
            if len(dead_L):
                to_init.append(dead_L)
                events.append(
                    {
                        "event": "resample",
                        "step": done,
                        "n_latents": len(dead_L),
                        "reset": dead_L.tolist(),
                    }
                )
        if to_init:
            latents_L = torch.cat(to_init)
            mech.resample_latents(
                self, latents_L, x_BD, out.sq_err_B, generator, cfg.resample_enc_scale
            )
            self._forget(latents_L)
        return events

    def _forget(self, latents_L: Tensor) -> None:
        """A re-initialised latent starts with clean statistics (and a fresh window)."""
        self.firing.reset(latents_L)
        if self.cfg.window_tracking:
            self.window.reset(latents_L)
