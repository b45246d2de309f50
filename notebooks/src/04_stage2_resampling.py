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
# `HierarchicalSAE` (linear_sparsity, resampling). Everything else (data, optimiser, budget, seeds) is identical to
# the baselines of notebook 02.

# %% parameters
overrides = {}  # e.g. {"resample_every": 200}: this stage alone, into a separate folder

# %%
import matplotlib.pyplot as plt

from hsae_utils import config
from hsae_utils.analysis import report
from hsae_utils.experiment import paper_runs as experiments
from hsae_utils.runs import ABLATIONS, get_run

P = config.get_profile(profile)
RUN = "stage2_resampling"
spec = get_run(RUN)
print(spec.label, "| switches:", {k: v for k, v in spec.overrides.items()}, "| overrides:", overrides)

# %%
# Trained by notebook 02 with every run of its seed (one shared pass); trained here if missing.
runs = experiments.train_run(P, RUN, overrides=overrides)

# %% [markdown]
# ## Training curves
# Ticks at the bottom of a panel mark resampling events, triangles at the top merge events.

# %%
report.plot_training_curves(runs, title=spec.label)
plt.show()

# %%
report.events_table(runs).groupby(["seed", "event"]).agg(events=("step", "size"), latents=("latents", "sum"))

# %%
summary = experiments.final_metrics(runs)
summary

# %%
assert len(summary) == len(P.seeds) and summary["loss"].notna().all()
