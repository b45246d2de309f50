# %% [markdown]
# # 04 · Ablation stage 2: + Resampling of dead features
#
# Stage 2 adds resampling of dead latents: "features ... resampled from high-loss examples to
# prevent collapse" (section 4.2). The paper gives no recipe, so we use the field's standard one
# (Anthropic, April 2023 update), a careful reading:
#
# * every `resample_every` = 100 steps, a latent is **dead** if it did not fire on any token of the
#   last 100 steps (the standard criterion; stage 3 replaces it with the window rate);
# * each dead latent is re-initialised from an input of the current batch drawn with probability
#   proportional to its squared reconstruction error: decoder row = the normalized input, encoder
#   column = the same direction scaled to 0.2 x the mean encoder norm of the alive latents, encoder
#   bias 0;
# * the Adam moments of exactly those rows and columns are reset, so stale momentum does not undo
#   the re-initialisation.
#
# Parameters: `resample_every`, `resample_enc_scale` in `HierarchicalSAEConfig`.
#
# Each ablation stage is cumulative (section 5.4): this run switches on mechanisms 1..2 of
# `HierarchicalSAE` (linear_sparsity, resampling). Everything else (data, optimiser, budget,
# seeds) is identical to the baselines of notebook 02.

# %% parameters
overrides = {}  # e.g. {"resample_every": 200}: this stage alone, into a separate folder

# %%
import matplotlib.pyplot as plt

from hsae_utils import config
from hsae_utils.analysis import report
from hsae_utils.analysis.report import stage_traces
from hsae_utils.analysis.report import worked_examples as examples
from hsae_utils.experiment import paper_runs as experiments
from hsae_utils.runs import get_run

P = config.get_profile(profile)
RUN = "stage2_resampling"
spec = get_run(RUN)
print(
    spec.label, "| switches:", {k: v for k, v in spec.overrides.items()}, "| overrides:", overrides
)

# %% [markdown]
# ## A dead latent resampled, worked out
# A toy stage-2 `HierarchicalSAE` (8 input dimensions, 6 latents) whose latent 2 is forced dead
# (encoder bias -100) sees 10 random batches of 64 inputs through its own loss and `after_step`,
# with `resample_every = 10` and no gradient step, so only the mechanism changes the weights. In
# each batch 4 inputs are 4x larger (16x the squared error): the draw, proportional to the squared
# loss, should pick one of them. After the 10th step the latent has fired on no token of the
# last 10 steps (firing rate 0 < 0.01), so it is resampled: decoder row = the drawn input,
# normalized; encoder column = the same direction x 0.2 x the mean encoder norm of the other
# latents (1 here: the toy's rows are unit norm); encoder bias 0. It fires again.

# %%
toy = examples.dead_latent_example()
print("events:", toy["events"])
print(f"firing rate of latent 2 over the 10 steps before: {toy['rate_before']:.3f}")
print(
    f"drawn input: #{toy['drawn_input']}, loss rank {toy['loss_rank']} of {toy['batch']} "
    f"(the {toy['n_loud']} large inputs rank 1-{toy['n_loud']}); cosine of the new decoder row "
    f"with it {toy['cos_with_input']:.3f}"
)
toy["table"]

# %% [markdown]
# ## The stage at the profile
# Trained by notebook 02 with every run of its seed (one shared pass); trained here if missing.
# Ticks at the bottom of a panel mark resampling events, triangles at the top merge events.

# %%
runs = experiments.train_run(P, RUN, overrides=overrides)
report.plot_training_curves(runs, title=spec.label)
plt.show()

# %% [markdown]
# **What this shows.** How many latents died and were resampled in each run. Resampling only
# matters where latents die: with no event, this run is stage 1's, step for step.

# %%
print(stage_traces.events_in_words(runs, acts_by="resample", previous="stage 1"))
print(stage_traces.dead_in_words(runs))
summary = experiments.final_metrics(runs)
summary

# %%
assert len(summary) == len(P.seeds) and summary["loss"].notna().all()
