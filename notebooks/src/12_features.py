# %% [markdown]
# # 12 · Looking at the features
#
# The metrics of notebook 08 say how well each SAE reconstructs and how its latents line up with
# known concepts; they do not show a single latent. Here we look at the latents of four SAEs
# trained on the same activations, seed 42: TopK, BatchTopK, L1 (ReLU) and the HierarchicalSAE
# with all five mechanisms (stage 5).
#
# For every latent, one pass over the validation tokens (`hsae_utils/features/stats.py`) gives what
# feature dashboards show (sae_vis, sae-dashboard): its **firing density** (the fraction of tokens
# on which it is nonzero, log10 as in SAEBench and Anthropic's dashboards), activation quantiles and
# a histogram of its nonzero activations, its **top contexts** and samples from activation-quantile
# intervals (the highlighted token and a few tokens around it), its **logit effects** (the tokens
# its decoder direction promotes and suppresses through the model's final norm and unembedding),
# and its **nearest latents** by decoder cosine with how often they fire together. The statistics
# are stored next to each SAE (`<run>/features/`, keyed to the SAE's weights and the tokens) and
# reused.
#
# We look at three things: how density is spread (a dense latent, firing on a large share of all
# tokens, is a known failure of L1 and adaptive-sparsity codes); how close each latent's decoder
# direction comes to another's, against the 0.9 cosine at which the HierarchicalSAE's clustering
# merges two latents; and six latents of each SAE chosen by rule, not by hand — the absorption
# eval's main latent for two letters, the sparse-probing eval's top latent for two tasks, and two
# random alive latents — shown as text, then one intervention a reader can check.

# %% parameters
seed = 42  # the seed of the four SAEs shown
n_contexts = 3  # top contexts printed per latent (the browser shows them all)
autointerp_latents = 2  # latents per SAE explained and scored when an endpoint is configured

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from hsae_utils import config
from hsae_utils.data.model import load_model, model_fingerprint
from hsae_utils.evals.loading import export_run, load_adapter
from hsae_utils.evals.run import eval_cache_root
from hsae_utils.features import autointerp, showcase
from hsae_utils.features.inspect import FEATURE_RUNS, inspect_sae, sae_stats
from hsae_utils.features.interventions import intervene
from hsae_utils.features.rows import ValidationRows
from hsae_utils.pipeline import resources
from hsae_utils.runs import RUNS, run_dir

# Model batches as notebook 01's on this GPU (older caches are re-read with them); CPU: as is.
P = resources.sized_for_device(config.get_profile(profile))
t_start = time.perf_counter()
folders = {name: run_dir(P, name, seed) for name in FEATURE_RUNS}
missing = [str(f) for f in folders.values() if not (f / "hsae_config.json").is_file()]
if missing:
    raise FileNotFoundError(
        "Notebook 12 shows the seed-42 SAEs that notebooks 02-07 train; missing: "
        + ", ".join(missing)
        + ". Run notebooks 01-08 first."
    )
runs = {name: export_run(folder, P.sae_dir) for name, folder in folders.items()}
labels = {name: RUNS[name].label for name in FEATURE_RUNS}
model = load_model(P)
rows = ValidationRows(P, model, eval_cache_root(P))
print(
    f"profile {P.name}: {P.model_name}, hook {P.hook_name}; {rows.x_ND.shape[0]:,} validation "
    f"tokens in {rows.tokens_SC.shape[0]} contexts"
)

# %% [markdown]
# ## Statistics
#
# Computed once per SAE (a few passes over the validation rows, each keeping only summaries) and
# stored next to it; a re-run reads them back after checking their checksum and what they were
# computed from.

# %%
data, seconds = {}, {}
for name, run in runs.items():
    t0 = time.perf_counter()
    data[name] = sae_stats(run, P, model=model, rows=rows)
    seconds[name] = time.perf_counter() - t0
summary = pd.DataFrame(
    [
        {
            "SAE": labels[name],
            "latents": len(d["latents"]),
            "dead": sum(r["density"] == 0 for r in d["latents"]),
            "dense (> 10 % of tokens)": sum(r["density"] > 0.1 for r in d["latents"]),
            "median density (alive)": np.median(
                [r["density"] for r in d["latents"] if r["density"] > 0]
            ),
            "max decoder cos > 0.9": sum(
                r["neighbours"][0]["cos"] > 0.9 for r in d["latents"] if r["neighbours"]
            ),
            "seconds": round(seconds[name], 1),
        }
        for name, d in data.items()
    ]
)
out_dir = P.output_dir / "features"
out_dir.mkdir(parents=True, exist_ok=True)
summary.to_csv(out_dir / "summary.csv", index=False)
summary

# %% [markdown]
# ## Density
#
# One histogram per SAE of log10 firing density over its alive latents (dead latents, which never
# fire on these tokens, are counted in the legend). TopK fixes the number of active latents per
# token (BatchTopK per batch), which bounds the average density at k / d_sae; an L1 penalty bounds
# nothing per token, so a latent may fire on most tokens: a dense code shows as mass at the right
# edge, beyond the dotted line.

# %%
fig, ax = plt.subplots(figsize=(7, 3.8))
for name, d in data.items():
    logd = [r["log10_density"] for r in d["latents"] if r["log10_density"] is not None]
    dead = len(d["latents"]) - len(logd)
    ax.hist(
        logd,
        bins=np.linspace(np.log10(1 / rows.x_ND.shape[0]), 0, 41),
        histtype="step",
        lw=1.6,
        label=f"{labels[name]} ({dead} dead)",
    )
ax.axvline(-1, color="0.4", ls=":", lw=1)
ax.text(-0.97, ax.get_ylim()[1] * 0.9, "dense: fires on\n> 10 % of tokens", fontsize=8, va="top")
ax.set_xlabel("log10 firing density (fraction of validation tokens)")
ax.set_ylabel("latents")
ax.set_title(f"Firing density, seed {seed} ({P.name})")
ax.legend(fontsize=8)
fig.savefig(out_dir / "density.png", dpi=150, bbox_inches="tight")
plt.show()

# %% [markdown]
# ## How close latents come to merging
#
# The HierarchicalSAE merges two latents when their decoder directions have cosine similarity above
# 0.9 (Eq. 7, `merge_threshold`). Each latent's largest decoder cosine to any other latent, sorted:
# a curve that never reaches the dotted line means clustering found nothing to merge.

# %%
fig, ax = plt.subplots(figsize=(7, 3.8))
for name, d in data.items():
    top = sorted((r["neighbours"][0]["cos"] for r in d["latents"] if r["neighbours"]), reverse=True)
    ax.plot(np.arange(1, len(top) + 1) / len(top), top, lw=1.6, label=labels[name])
ax.axhline(0.9, color="k", ls=":", lw=1, label="merge threshold 0.9")
ax.set_xlabel("fraction of latents (sorted by their largest cosine)")
ax.set_ylabel("largest decoder cosine to another latent")
ax.set_title("Nearest decoder direction of each latent (merging needs > 0.9)")
ax.legend(fontsize=8)
fig.savefig(out_dir / "max_decoder_cosine.png", dpi=150, bbox_inches="tight")
plt.show()
print(
    {
        labels[n]: round(max(r["neighbours"][0]["cos"] for r in d["latents"]), 3)
        for n, d in data.items()
    }
)

# %% [markdown]
# ## Six latents of each SAE, chosen by rule
#
# * the absorption eval's main latent (notebook 08, `absorption_per_letter.csv`) for the two letters
#   that have main latents in all four SAEs with the highest ground-truth probe F1;
# * the latent the sparse-probing eval ranks first (largest mean difference between the classes,
#   SAEBench's top-k selection) for the first class of the first two tasks;
# * two random alive latents (seeded).
#
# Each: density, the largest activation, the median of its nonzero activations, the tokens it
# promotes and suppresses, then its strongest contexts and samples from its weaker quantile
# intervals, the token it fires on in [[ ]].

# %%
from hsae_utils.evals import probing as probing_mod

letters_csv = P.results_dir / "absorption_per_letter.csv"
letters = showcase.shared_letters(letters_csv, [r.run for r in runs.values()])
probing_data = probing_mod.build_probing_data(
    model, P, cache_root=eval_cache_root(P), fingerprint=model_fingerprint(P), progress=False
)
chosen = {}
for name, run in runs.items():
    adapter = load_adapter(run, "cpu", P, rows.normalization)
    picks = [
        (showcase.main_latents(letters_csv, run.run)[L][0], f"main latent of letter {L!r}")
        for L in letters
    ]
    picks += [
        (f, f"top probing latent, {task}: {cls}")
        for task, cls, f in showcase.probing_top_latents(adapter, probing_data)
    ]
    picks += [
        (f, "random alive")
        for f in showcase.random_alive(
            data[name], 6 - len(picks), seed, exclude=[f for f, _ in picks]
        )
    ]
    chosen[name] = picks
    print(f"=== {labels[name]} ===")
    for f, why in picks:
        print(showcase.latent_text(data[name]["latents"][f], why, n_top=n_contexts))
    print()

# %% [markdown]
# ## An intervention to check
#
# The absorption prompt asks for a word's first letter after in-context examples
# ("… {word} has the first letter:"). Ablating the letter's main latent at the word (subtracting its
# activation times its decoder direction from the residual there, `features/interventions.py`)
# should lower the probability of the right answer if the latent carries the letter. The word is
# the strongest context of the latent that starts with the letter (else one drawn from the
# vocabulary).

# %%
from hsae_utils.data.forward import layer_resid
from hsae_utils.data.tokens import bos_token_id

rows_iv = []
for name, run in runs.items():
    adapter = load_adapter(run, "cpu", P, rows.normalization)
    for f, why in chosen[name][: len(letters)]:
        L = why.split("'")[1]
        word = showcase.word_from_contexts(data[name]["latents"][f], L)
        tokens, at, answer, word = showcase.letter_prompt(
            model.tokenizer, bos_token_id(model.tokenizer), L, word, P.absorption_icl_examples, seed
        )
        at_word = torch.zeros(tokens.shape, dtype=torch.bool)
        at_word[0, at] = True
        res = intervene(model, adapter, tokens, f, P.hook_name, mode="ablate", positions=at_word)
        z_word = float(adapter.encode(layer_resid(model, tokens, P.layer))[0, at, f])
        rows_iv.append(
            {
                "SAE": labels[name],
                "letter": L,
                "word": word,
                "latent": f,
                "activation at the word": z_word,
                "p(answer) clean": showcase.probability(res.logp_clean_BSV, answer),
                "p(answer) ablated": showcase.probability(res.logp_edit_BSV, answer),
                "Δ log p": float(res.change([answer])[0]),
            }
        )
interventions = pd.DataFrame(rows_iv)
interventions.to_csv(out_dir / "interventions.csv", index=False)
interventions

# %% [markdown]
# ## Feature browser
#
# One self-contained HTML page per SAE (`outputs/<profile>/features/<run>.html`): every latent with
# its statistics, histogram, logit effects, neighbours and contexts. The HierarchicalSAE's is shown
# below; open the others from the folder.

# %%
pages = {name: inspect_sae(run, P, model=model, rows=rows) for name, run in runs.items()}
for name, path in pages.items():
    print(f"{labels[name]}: {path}")
from hsae_utils.features.browser import show_browser  # noqa: E402

show_browser(pages["stage5_clustering"])

# %% [markdown]
# ## Auto-interpretation (optional)
#
# With an OpenAI-compatible endpoint configured (`HSAE_AUTOINTERP_BASE_URL`,
# `HSAE_AUTOINTERP_MODEL`, optionally `HSAE_AUTOINTERP_API_KEY`), SAEBench's explanation and
# detection prompts run on the first latents shown above. A detection score measures the explaining
# model as much as the SAE: scores from a model too small to explain features are not findings.

# %%
if autointerp.autointerp_configured():
    from hsae_utils.features.inspect import token_strings

    token_str = token_strings(model.tokenizer)
    ai_rows = []
    for name, run in runs.items():
        adapter = load_adapter(run, "cpu", P, rows.normalization)
        ids = [f for f, _ in chosen[name][:autointerp_latents]]
        negatives = {
            f: autointerp.silent_windows(adapter.encode, rows, f, 4, seed=seed) for f in ids
        }
        for r in autointerp.run_autointerp(
            data[name], ids, negatives, rows.tokens_SC, token_str, seed
        ):
            ai_rows.append({"SAE": labels[name], **r})
    display(pd.DataFrame(ai_rows))
else:
    print(autointerp.HOW_TO)
print(f"notebook 12: {time.perf_counter() - t_start:.0f} s")
