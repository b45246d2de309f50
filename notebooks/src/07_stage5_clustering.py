# %% [markdown]
# # 07 · Ablation stage 5: + Feature clustering = HierarchicalSAE
#
# The last stage is the full HierarchicalSAE: every 100 steps, latents whose cosine similarity
# exceeds 0.9 are merged "through weight averaging" (section 4.3, Eq. 7,
# $W^{new}_{enc,i} = \frac12 (W_{enc,i} + W_{enc,j})$).
#
# Open points and **our readings** (each a config field):
#
# * *Which similarity* (`merge_similarity="decoder"`): decoder rows, the feature directions that
#   the unit-norm constraint is about. Eq. 7 only writes the encoder; `"encoder"` and `"both"` are
#   available.
# * *What is averaged*: encoder columns, encoder biases and decoder rows of the pair, decoder row
#   renormalized (averaging only the encoder would leave the decoder inconsistent).
# * *Which pairs*: greedy, most similar first, each latent in at most one pair per round.
# * *The freed latent* (`merge_reinit="resample"`): re-initialised from a high-loss input like a
#   resampled latent, with its Adam state reset, so the dictionary keeps its size; `"zero"` is the
#   other reading.
#
# With dictionaries as small as d_model, decoder rows rarely reach 0.9 cosine similarity, so merges
# may be rare; the event table below shows how many happened.
#
# Each ablation stage is cumulative (section 5.4): this run switches on mechanisms 1..5 of
# `HierarchicalSAE` (linear_sparsity, resampling, window_tracking, adaptive_sparsity, clustering). Everything else (data, optimiser, budget, seeds) is identical to
# the baselines of notebook 02.

# %% parameters
overrides = {}  # e.g. {"merge_similarity": "encoder"}: this stage alone, into a separate folder

# %%
import matplotlib.pyplot as plt

from hsae_utils import config
from hsae_utils.analysis import report
from hsae_utils.experiment import paper_runs as experiments
from hsae_utils.runs import ABLATIONS, get_run

P = config.get_profile(profile)
RUN = "stage5_clustering"
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
