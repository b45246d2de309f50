# %% [markdown]
# # 08 · Evaluation
#
# Section 5.3 evaluates every SAE with "established metrics from recent SAE literature": core
# reconstruction and model-behaviour metrics, feature absorption on the first-letter task
# (Chanin et al. 2024) and sparse probing (Gurnee et al. 2023). We compute them the way SAEBench,
# SAELens and dictionary_learning do, for every SAE the training notebooks (02-07) saved, and write
# one tidy table (`run, config, seed, metric, value`) that the figures notebook reads.
#
# **Core metrics** (validation split; BOS and document-boundary tokens keep their activation and
# are left out of every average):
#
# * *Explained variance*, two formulas, both reported: `explained_variance_legacy` is the per-token
#   1 − ‖x − x̂‖² / ‖x − mean(x)‖², averaged over tokens (what the SAEBench paper reported);
#   `frac_variance_explained` is 1 − Σ_d var(x_d − x̂_d) / Σ_d var(x_d) (dictionary_learning's
#   formula and name; SAEBench's newer `explained_variance` measures variance around zero and is
#   known to be wrong, so no metric here carries that name).
# * `mse_norm`: the per-token sum of squared errors averaged over tokens, in the
#   normalized space the SAEs were trained in (`mse_raw`: raw units; `mse`: SAEBench's formula).
# * `l0`, `l1`, alive / dead latents (alive = fires at least once on the evaluation tokens),
#   `cossim` and `l2_ratio` of reconstructions.
# * With the SAE spliced into the model at the hooked layer: KL divergence to the clean next-token
#   distribution, KL score against zero ablation, CE loss (clean, with the SAE, zero-ablated) and
#   the fraction of CE loss recovered, (CE_abl − CE_sae) / (CE_abl − CE_clean). Only the layers
#   after the hook run again.
#
# **Cost.** Everything the language model computes (the splice inputs and clean / ablated
# losses, the absorption prompts' activations, the probing texts' activations and the LLM probes)
# is computed once and cached under `outputs/<profile>/eval_cache/`, keyed by model, hook and
# data; every SAE and seed reuses it. Per SAE only the SAE passes and the splice through the
# remaining layers run. The clean log-probabilities are recomputed from the cached layer output
# once per session and shared by all SAEs (storing them would take 200 kB per token for SmolLM2's
# 49k vocabulary, 0.8 GB for the `local` splice set; fp16 would spoil KL).
#
# **Budgets.** `paper` uses SAEBench's defaults. `local` is sized to evaluate every trained SAE
# within the pipeline's time budget on a 2-core CPU (the measured time of this notebook is in the
# timing line of `docs/results.md`): the KL / CE splice uses `n_eval_contexts` contexts of 128 tokens, the
# absorption task a letter-balanced sample of `absorption_vocab_size` alphabetic tokens with
# SAEBench's 10-example prompts (a shared prefix per group of words, run once with its key/value
# cache), and sparse probing `probe_train_per_class` + `probe_test_per_class` texts per class, cut to
# 128 tokens. `smoke` runs the same code in seconds.
#
# **Public SAEs.** `external_saes` adds SAEs in SAELens' format (a folder, or a `release:sae_id`
# such as a Gemma Scope SAE for the paper profile) to the same evaluation. They are loaded with
# `sae_lens.SAE` (any architecture SAELens reads: standard, TopK, JumpReLU, ...), must read the
# profile's hook with the model's width, and are evaluated in the same normalized space as ours
# (the activation cache's scale), so every metric, `mse_norm` included, is comparable.

# %% parameters
metrics = "core,absorption,probing"  # metric families to compute
# SAELens-format SAEs to evaluate next to ours, comma-separated: folders (cfg.json +
# sae_weights.safetensors) or "release:sae_id" from SAELens' directory (needs the hub),
# e.g. "gemma-scope-2b-pt-res-canonical:layer_19/width_16k/canonical" in the paper profile.
external_saes = ""
# A SAEBench probing dataset (hub profiles) that cannot be read stops the evaluation, named with
# the cause and the fix; True skips it instead, and prints each one skipped.
skip_unavailable_probing = False
rebuild_cache = False  # True recomputes the model-side evaluation cache (run_all.sh --force)

# %%
import matplotlib.pyplot as plt
import pandas as pd

from hsae_utils import config, evals
from hsae_utils.analysis import report
from hsae_utils.pipeline import resources

# Batch sizes of the visible GPU, as the preflight printed (no cache key reads them); CPU: as is.
P = resources.sized_for_device(
    config.get_profile(profile, skip_unavailable_probing=skip_unavailable_probing)
)
runs = evals.find_saes(P.sae_dir) + evals.external_runs(external_saes, P)
families = tuple(m.strip() for m in metrics.split(",") if m.strip())
print(
    f"profile {P.name}: {P.model_name}, hook {P.hook_name}, "
    f"splice batch {P.eval_batch_contexts} contexts"
)
print(
    f"budgets: splice {P.n_eval_contexts} contexts x {P.context_size} tokens; absorption "
    f"{P.absorption_vocab_size or 'all'} words, {P.absorption_icl_examples} ICL examples; probing "
    f"{P.probe_train_per_class} + {P.probe_test_per_class} texts per class, <= {P.probe_max_tokens} tokens"
)
if runs:
    print(f"{len(runs)} SAEs (ours under {P.sae_dir}, then the external ones):")
    display(
        pd.DataFrame(
            [(r.config, r.seed, r.label, r.architecture) for r in runs],
            columns=["config", "seed", "label", "architecture"],
        )
    )
else:
    print(f"No trained SAEs under {P.sae_dir}: run notebooks 02-07 first. Nothing to evaluate.")

# %% [markdown]
# ## Evaluate
# The model-side work runs first (or is read back from the cache), then each SAE. The printout
# splits the time between the two.

# %%
# NBVAL_IGNORE_OUTPUT
result = evals.evaluate_profile(P, runs, families=families, rebuild_cache=rebuild_cache)
for note in result.notes:
    print("·", note)

# %% [markdown]
# ## Summary
# Mean ± standard deviation over seeds. Lower is better for the MSEs, KL and the absorption scores;
# higher for explained variance, the KL / CE scores and probing accuracy.

# %%
R = report.Results.from_evaluation(result, P)
summary = report.summary_table(R)
summary

# %% [markdown]
# ## Reconstruction and model behaviour

# %%
fig = report.plot_core_metrics(R, configs=None)
plt.show()

# %% [markdown]
# ## Sparse probing and absorption
# Probing accuracy of logistic regressions on the top-k SAE latents (by mean difference between
# classes), against probes on the residual stream itself (lines). Absorption: mean absorption
# fraction and full-absorption rate over the letters the ground-truth probe detects
# (F1 > 0.6); lower is better.

# %%
fig = report.plot_probing(R, configs=None)
plt.show()
fig = report.plot_absorption_scores(R)
plt.show()

# %% [markdown]
# ### Per dataset and per letter
# Sparse probing per dataset, averaged over seeds; then the per-letter absorption of each
# configuration with the ground-truth probe's F1. A letter whose probe F1 is at most 0.6 does not
# enter the absorption scores (SAEBench's rule); on a small model many letters can fall below it,
# and the notes above say so.

# %%
if not result.probing_tasks.empty:
    tasks = result.probing_tasks
    llm = tasks.groupby("dataset", sort=False)[
        ["llm_test_accuracy", "llm_top_1_test_accuracy"]
    ].first()
    top1 = tasks.pivot_table(
        index="dataset",
        columns="config",
        values="sae_top_1_test_accuracy",
        aggfunc="mean",
        sort=False,
    )
    display(llm.join(top1.add_prefix("SAE top-1 · ")).round(3))

# %%
if not result.absorption_letters.empty:
    letters = result.absorption_letters
    table = letters.pivot_table(
        index="letter",
        columns="config",
        values="mean_absorption_fraction",
        aggfunc="mean",
        sort=False,
    )
    table.insert(0, "probe_f1", letters.groupby("letter")["probe_f1"].first())
    display(table.round(3))

# %% [markdown]
# ## Save
# One tidy table for the figures notebook: `evaluation.csv` / `evaluation.json` with columns
# run, config, seed, metric, value. Headline metrics have plain names; per-dataset and per-letter
# details carry a suffix, e.g. `sae_top_1_test_accuracy:sentiment`, `absorption_fraction:e`.

# %%
if result.runs:
    paths = evals.save_results(result, P.results_dir, P)
    for name, path in paths.items():
        print(f"{name:>20}: {path}")
    tidy = result.results
    display(tidy.head())

# %%
if result.runs:
    assert set(tidy.columns) == {"run", "config", "seed", "metric", "value"}
    assert tidy["run"].nunique() == len(runs)
    heads = tidy[~tidy["metric"].str.contains(":")]
    if "core" in families:
        ev = heads[heads["metric"] == "explained_variance_legacy"]["value"]
        assert len(ev) == len(runs) and (ev <= 1).all()
        assert heads[heads["metric"] == "ce_loss_without_sae"]["value"].gt(0).all()
    assert paths["csv"].exists() and paths["json"].exists()
