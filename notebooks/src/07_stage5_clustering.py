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
# Each ablation stage is cumulative (section 5.4): this run switches on mechanisms 1..5 of
# `HierarchicalSAE` (linear_sparsity, resampling, window_tracking, adaptive_sparsity,
# clustering). Everything else (data, optimiser, budget, seeds) is identical to the baselines of
# notebook 02.

# %% parameters
overrides = {}  # e.g. {"merge_similarity": "encoder"}: this stage alone, into a separate folder

# %%
import matplotlib.pyplot as plt

from hsae_utils import config
from hsae_utils.analysis import report
from hsae_utils.analysis.report import stage_traces
from hsae_utils.analysis.report import worked_examples as examples
from hsae_utils.experiment import paper_runs as experiments
from hsae_utils.runs import get_run

P = config.get_profile(profile)
RUN = "stage5_clustering"
spec = get_run(RUN)
print(
    spec.label, "| switches:", {k: v for k, v in spec.overrides.items()}, "| overrides:", overrides
)

# %% [markdown]
# ## The merge rule, worked out
# Six toy latents with random unit decoder rows in 8 dimensions, except that latent 4 is latent 1
# plus a little noise and latent 5 is latent 2 plus more noise. The package's merge step
# (`latent_similarity`, `find_merge_pairs`, `merge_pairs`, as `HierarchicalSAE.after_step` calls
# them) merges every pair above 0.9, most similar first: only (1, 4) qualifies, and latent 1
# becomes the renormalized average of the two rows (equally close to both), latent 4 is freed for
# re-initialisation. (2, 5) and (3, 4) are similar, but below 0.9.

# %%
merge = examples.merge_example()
print("pairs merged:", merge["pairs"], "| freed:", merge["freed"])
print({k: round(v, 3) for k, v in merge["merged"].items()})
examples.plot_similarity(merge["similarity"], merge["threshold"], merge["pairs"])
plt.show()

# %% [markdown]
# ## The stage at the profile
# Trained by notebook 02 with every run of its seed (one shared pass); trained here if missing.
# Ticks at the bottom of a panel mark resampling events, triangles at the top merge events.

# %%
runs = experiments.train_run(P, RUN, overrides=overrides)
report.plot_training_curves(runs, title=spec.label)
plt.show()

# %% [markdown]
# ## How close two latents of the trained SAE come
# For each latent of each seed's final SAE, its largest decoder cosine similarity to any other
# latent, against the merge threshold: a merge needs a latent to the right of the line.

# %%
max_cos = {r.seed: stage_traces.max_decoder_cosine(r.folder) for r in runs}
stage_traces.plot_max_cosine(max_cos, threshold=0.9)
plt.show()

# %% [markdown]
# **What this shows.** Whether any two latents came close enough to merge. Where none passes
# 0.9 (the lines below say), the merge rule has nothing to act on: stage 5 is then stage 4 step
# for step, and the paper's fifth mechanism is not exercised at this dictionary size.

# %%
print(stage_traces.max_cosine_in_words(max_cos, threshold=0.9))
print(stage_traces.events_in_words(runs, acts_by="merge", previous="stage 4"))
summary = experiments.final_metrics(runs)
summary

# %%
assert len(summary) == len(P.seeds) and summary["loss"].notna().all()
