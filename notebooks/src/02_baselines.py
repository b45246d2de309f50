# %% [markdown]
# # 02 · Baselines: TopK, BatchTopK and L1
#
# Section 5.4 compares HierarchicalSAE against three baselines, trained on the same cached
# activations with the same optimiser (Adam(W), lr 3e-4, betas (0.9, 0.999), weight decay 0.01,
# gradient clipping 1.0, batch 2,048; 4,882 steps in the `paper` profile):
#
# * **TopK** (Gao et al.): keep the k largest pre-activations per token. The paper uses k = 320 at
#   2,304 latents; for another dictionary size we scale k by d_sae / 2,304 (k = 80 at SmolLM2's 576).
#   The AuxK loss on dead latents is on, as in Gao et al. and the anchors.
# * **BatchTopK** (Bussmann et al. 2024): keep the k x batch largest activations across the
#   batch while training; at inference a learned global threshold replaces the top-k.
# * **L1** (lambda = 0.04): a ReLU SAE with a constant L1 penalty.
#
# All SAEs have unit-norm decoder rows (the gradient's parallel component is removed before each
# step and the rows renormalized after it) and a dictionary as large as `d_model`, as in the paper.
# Loss convention: squared error summed over dimensions, mean over the batch.
#
# **Weight decay.** "Adam with weight decay 0.01" has two readings. The literal
# `torch.optim.Adam(weight_decay=0.01)` adds an L2 term to the gradient *after* clipping it to norm
# 1, where it is as large as the data gradient; for a rarely firing latent Adam's normalized step
# then follows the decay and drives the latent dead (a side measurement at this budget, in
# `docs/weight_decay.md`: several points of explained variance for every configuration, and dead
# TopK latents). We use decoupled AdamW at 0.01 (`TrainConfig.optimizer = "adamw"`); `"adam_l2"`
# (the literal reading, bit for bit) and `"none"` stay runnable.
#
# Seeds 42, 43, 44 where the profile allows (the paper averages over three).

# %% parameters
force_retrain = False  # True retrains every run (baselines, stages, sweep) that already finished

# %%
import matplotlib.pyplot as plt

from hsae_utils import config, runs
from hsae_utils.analysis import report
from hsae_utils.data.activations import ActivationStore
from hsae_utils.experiment import paper_runs as experiments

P = config.get_profile(profile)
store = ActivationStore(P.cache_dir / "train")
print(
    f"{store.n_tokens:,} training tokens; {P.train_steps} steps x {P.train_batch_size} "
    f"= {P.train_steps * P.train_batch_size / store.n_tokens:.1f} epochs; seeds {P.seeds}; "
    f"d_sae {P.dict_size}, TopK k = {P.topk_k}"
)

# %% [markdown]
# ## Training every run, one pass over the cache per seed
# All runs of a seed read the same batches in the same order: the three baselines here, the five
# ablation stages of notebooks 03-07 and the sparsity sweep below. So they train together, one
# pass over the cache per seed: each batch is read and normalized once and fed to every SAE, each
# with its own optimizer, mechanisms, log and checkpoints (`experiments.train_paper_runs`). The
# stages take identical gradient steps until a mechanism acts (stages 1-3 share Eq. 3's loss,
# stages 4-5 Eq. 6's; resampling, window tracking and merging change the weights only through
# their events), so such "twins" compute a step once until one of them acts. Each run ends
# bit-identical on CPU to training it alone (`tests/test_train_many.py`). A finished run is
# reused; an interrupted one resumes from its checkpoint. Notebooks 03-07 examine the stages.

# %%
trained = experiments.train_paper_runs(P, store, force=force_retrain)
print(experiments.sharing_report(trained))
results = {spec.name: trained[spec.name] for spec in runs.BASELINES}

# %% [markdown]
# ## Training curves

# %%
for name, seed_runs in results.items():
    report.plot_training_curves(seed_runs, title=runs.get_run(name).label)
    plt.show()

# %% [markdown]
# ## Where training ended
# Metrics on the last training batch (the evaluation notebook measures them properly on
# held-out tokens). `dead`: latents that did not fire in the last `window_size` x batch tokens.

# %%
summary = experiments.final_metrics([r for seed_runs in results.values() for r in seed_runs])
summary

# %%
assert len(summary) == len(runs.BASELINES) * len(P.seeds)
assert summary["loss"].notna().all()

# %% [markdown]
# ## Sparsity sweeps: a frontier for every family, for comparisons at matched L0
# The paper compares SAEs at whatever L0 each method lands on (TopK at k = 320, HierarchicalSAE
# at ~1,735 active features), but reconstruction improves with L0 for every method, so the field
# compares SAEs at *matched* sparsity (a sparsity-fidelity frontier). The HierarchicalSAE's
# default L0 lies near the dictionary size, far above TopK's k, so each family is swept across
# the other's range: TopK and BatchTopK at k = topk_k x `sweep_k_factors` (up to k near the
# dictionary size), L1 at `sweep_l1_coefficients`, and the HierarchicalSAE's full model (stage 5)
# and stage 1 at lambda_0 = `sweep_hsae_lambda_factors` x 1/sqrt(d_sae) (a larger lambda_0 gives a
# sparser code). One seed (`sweep_seeds`), the same optimiser and budget, trained above in the
# seed's pass; `runs.family` puts each in its method's family and `runs.sweep_base` names the run
# it varies. Notebook 08 evaluates them and notebook 09 draws one frontier per family.

# %%
sweep = runs.sweep_runs(P)
print("sweep:", ", ".join(spec.label for spec in sweep), "· seeds", P.sweep_seeds)
sweep_results = [r for spec in sweep for r in trained[spec.name]]
sweep_summary = experiments.final_metrics(sweep_results)
sweep_summary.assign(base=[runs.sweep_base(r, P) for r in sweep_summary["run"]]).sort_values(
    ["base", "l0"]
)

# %%
assert len(sweep_summary) == len(sweep) * len(P.sweep_seeds)
assert sweep_summary["loss"].notna().all()
