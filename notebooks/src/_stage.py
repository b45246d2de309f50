# %% [markdown]
${intro}
#
# Each ablation stage is cumulative (section 5.4): this run switches on mechanisms 1..${stage} of
# `HierarchicalSAE` (${mechanisms}). Everything else (data, optimiser, budget, seeds) is identical to
# the baselines of notebook 02.

# %% parameters
overrides = {}  # e.g. ${override_example}: this stage alone, into a separate folder

# %%
import matplotlib.pyplot as plt

from hsae_utils import config
from hsae_utils.analysis import report
from hsae_utils.experiment import paper_runs as experiments
from hsae_utils.runs import ABLATIONS, get_run

P = config.get_profile(profile)
RUN = "${run}"
spec = get_run(RUN)
print(spec.label, "| switches:", {k: v for k, v in spec.overrides.items()}, "| overrides:", overrides)

${train_cells}
# %% [markdown]
# ## Training curves
# Ticks at the bottom of a panel mark resampling events, triangles at the top merge events.

# %%
report.plot_training_curves(runs, title=spec.label)
plt.show()

${extra_cells}# %%
report.events_table(runs).groupby(["seed", "event"]).agg(events=("step", "size"), latents=("latents", "sum"))

# %%
summary = experiments.final_metrics(runs)
summary

# %%
assert len(summary) == len(P.seeds) and summary["loss"].notna().all()
