"""What a profile's run needs, per stage, before any long work starts: disk, host RAM, GPU memory
and time, from the profile's sizes and measured (CPU) or estimated (GPU) throughputs.

    python -m hsae_utils.pipeline.resources plan PROFILE [--markdown]   print the plan
    python -m hsae_utils.pipeline.resources check PROFILE [--no-hub]    the plan, then check free disk, host
                                  [--jobs]                     RAM, the GPU and hub access (--jobs:
                                                               not RAM and GPU, which cluster jobs
                                                               request for themselves)
Exit status: 0 fine, 1 refused (the message names the fix), 2 bad usage.

Every quantity is one function of the profile. The activation-cache size is exact up to the
special tokens dropped (tests/test_resources.py checks it against a real cache); the others are
estimates with their assumptions stated next to them.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from hsae_utils.config import EMBEDDED_MODEL, Profile, get_profile
from hsae_utils.data.activations import cache_bytes, contexts_per_shard, dtype_bytes

GB = 1e9


# ============================================================================================
# Model sizes and throughputs
# ============================================================================================
@dataclass(frozen=True)
class ModelSize:
    n_params: int  # embeddings included (tied unembedding)
    vocab_size: int
    d_mlp: int


# Keyed by (model, d_model, n_layers), so a tiny replica of a hub model falls to the estimate.
KNOWN_MODELS = {
    ("google/gemma-2-2b", 2304, 26): ModelSize(2_614_341_888, 256_000, 9216),
    (EMBEDDED_MODEL, 576, 30): ModelSize(134_515_008, 49_152, 1536),
}
FALLBACK_VOCAB = 50_000  # an unknown model: a GPT-2-sized vocabulary


def model_size(profile: Profile) -> ModelSize:
    """Known sizes, else a gated-MLP transformer estimate (16 d^2 per layer, d_mlp = 4 d)."""
    known = KNOWN_MODELS.get((profile.model_name, profile.d_model, profile.n_layers))
    if known:
        return known
    d = profile.d_model
    return ModelSize(16 * d * d * profile.n_layers + FALLBACK_VOCAB * d, FALLBACK_VOCAB, 4 * d)


def layer_params(profile: Profile) -> float:
    m = model_size(profile)
    return (m.n_params - m.vocab_size * profile.d_model) / profile.n_layers


def run_dtype(profile: Profile) -> str:
    """The model's forward dtype where the profile runs: on its target card (`forward_dtype`)."""
    from hsae_utils.data.model import forward_dtype

    card = target_card(profile)
    if card is None:
        return profile.model_dtype
    return str(forward_dtype(profile, "cuda", bf16_supported=card.bf16_flops > 0)).split(".")[-1]


def weight_bytes(profile: Profile) -> int:
    return model_size(profile).n_params * (
        2 if run_dtype(profile) in ("bfloat16", "float16") else 4
    )


@dataclass(frozen=True)
class Rates:
    """Effective throughputs (FLOP/s of useful matmul work, bytes/s of cache reads)."""

    model_flops: float  # language-model forward
    sae_flops: float  # SAE training step, data loading included on CPU
    read_bytes: float  # reading the activation cache during training
    measured: bool


# CPU: measured on the 2-core development machine (config.py's `local` comments): SmolLM2 caches
# ~500 tokens/s up to layer 22 (2 x 23 layers x 3.5M params = 163 MFLOP/token -> 81 GFLOP/s); the
# splice runs 1.25 ms/token through 7 layers and the 49k unembedding (106 MFLOP -> 85 GFLOP/s);
# a 500-step x 2,048 run at d = F = 576 takes 30-40 s (12 B d F FLOP/step -> ~116 GFLOP/s).
CPU_RATES = Rates(model_flops=80e9, sae_flops=116e9, read_bytes=1e9, measured=True)


@dataclass(frozen=True)
class Card:
    """A GPU's published dense peaks (vendor datasheets; no sparsity)."""

    name: str
    memory_bytes: float
    fp32_flops: float  # CUDA cores, no TF32
    bf16_flops: float  # tensor cores; 0: no native bf16 (the model then runs in its fp32)
    memory_bandwidth: float  # bytes/s of device memory


CARDS = {
    "H100": Card("NVIDIA H100 SXM 80GB", 80e9, 67e12, 989e12, 3.35e12),
    "T4": Card("NVIDIA T4 16GB", 16e9, 8.1e12, 0.0, 320e9),
}
# The card each GPU profile is sized for. The plan's rates come from it, never from the machine
# that prints the plan (a CPU login node or a Colab CPU runtime would otherwise plan for its CPU).
TARGET_CARD = {"paper": "H100", "colab": "T4", "colab-gemma": "T4"}
# Efficiencies, ESTIMATES until scripts/gpu_check.sh measures them on the card: the model forward
# at 30 % of the peak in its dtype (batches of 16-64 contexts, attention and norms not matmuls),
# SAE steps at 40 % of the fp32 peak (the trainer's fp32 maths), cache reads at 2 GB/s (NVMe /
# page cache).
MODEL_EFFICIENCY, SAE_EFFICIENCY, GPU_READ_BYTES = 0.30, 0.40, 2e9
# The time target of the `paper` profile on its target card: the whole run within one hour.
TIME_TARGET_S = {"paper": 3600.0}


# Sizes from the card: the model batch (caching) and the splice batch (evaluation) are the
# largest that fit CARD_HEADROOM of the card's memory next to the weights, by the plan's own
# memory estimates (`forward_workspace_bytes`, `splice_gpu_bytes`): the profile's value x
# MAX_BATCH_SCALE, halved until it fits (down to 1; estimates, so never more than 4x what the
# profile was written for). The rest of the memory is the CUDA context, the allocator's slack.
CARD_HEADROOM, MAX_BATCH_SCALE = 0.8, 4


def fit_to_card(profile: Profile, memory_bytes: float) -> Profile:
    """The profile with `model_batch_size` and `eval_batch_contexts` sized for a card of
    `memory_bytes` (see CARD_HEADROOM); a card too small for the weights is a ValueError naming
    the fix. Used by the plan (the target card's memory), the preflight and the notebooks (the
    visible card's, `sized_for_device`)."""
    budget = CARD_HEADROOM * memory_bytes - weight_bytes(profile)
    if budget <= 0:
        raise ValueError(
            f"the model's weights ({_gb(weight_bytes(profile))} in {run_dtype(profile)}) do not "
            f"fit {CARD_HEADROOM:.0%} of this card's {_gb(memory_bytes)}: use a larger GPU "
            "(profile colab-gemma needs a 16 GB card such as a T4)."
        )

    def largest(base: int, need) -> int:
        b = base * MAX_BATCH_SCALE
        while b > 1 and need(b) > budget:
            b //= 2
        return b

    model_batch = largest(profile.model_batch_size, lambda b: forward_workspace_bytes(profile, b))
    n = n_runs(profile)
    eval_batch = largest(
        profile.eval_batch_contexts,
        lambda b: splice_gpu_bytes(dataclasses.replace(profile, eval_batch_contexts=b), n),
    )
    return dataclasses.replace(
        profile, model_batch_size=model_batch, eval_batch_contexts=eval_batch
    )


def sized_for_target(profile: Profile) -> Profile:
    """The profile as its target card runs it (`fit_to_card`); a CPU profile as it is."""
    card = target_card(profile)
    return profile if card is None else fit_to_card(profile, card.memory_bytes)


def card_memory(device: str) -> int:
    """Total memory in bytes of the CUDA card `device` names ("cuda": the current one)."""
    import torch  # only when a CUDA device is asked about

    return torch.cuda.get_device_properties(torch.device(device)).total_memory


def sized_for_device(profile: Profile, device: str | None = None) -> Profile:
    """The profile as it runs on `device` (default: the profile's resolved device): on CUDA its
    batch sizes fitted to the visible card (`fit_to_card`, the sizes the preflight prints; a card
    too small for the weights is the ValueError naming the fix), on the CPU the profile itself,
    so CPU runs stay bit-identical. Only `model_batch_size` and `eval_batch_contexts` change; no
    cache identity, stage stamp or training config reads them."""
    device = str(device or profile.resolve_device())
    if not device.startswith("cuda"):
        return profile
    return fit_to_card(profile, card_memory(device))


def target_card(profile: Profile) -> Card | None:
    """The GPU the profile is planned for; None: a CPU profile. A profile not in TARGET_CARD
    whose device is CUDA is planned for an H100."""
    if profile.device == "cpu":
        return None
    base = profile.name.split("+")[0]
    if base in TARGET_CARD:
        return CARDS[TARGET_CARD[base]]
    return CARDS["H100"] if profile.device.startswith("cuda") else None


def rates(profile: Profile) -> Rates:
    """Throughputs on the profile's target card (published peak x stated efficiency), or the
    measured CPU rates for a CPU profile; independent of the machine that computes them."""
    card = target_card(profile)
    if card is None:
        return CPU_RATES
    peak = card.bf16_flops if run_dtype(profile) == "bfloat16" else card.fp32_flops
    return Rates(
        model_flops=peak * MODEL_EFFICIENCY,
        sae_flops=card.fp32_flops * SAE_EFFICIENCY,
        read_bytes=GPU_READ_BYTES,
        measured=False,
    )


def on_gpu(profile: Profile) -> bool:
    return target_card(profile) is not None


# ============================================================================================
# Sizes of what the stages read and write
# ============================================================================================
def n_contexts(profile: Profile, split: str) -> int:
    n = profile.n_train_tokens if split == "train" else profile.n_valid_tokens
    return max(1, n // profile.context_size)


def split_cache_bytes(profile: Profile, split: str) -> int:
    """The activation cache of one split on disk (shards, tokens, headers)."""
    return cache_bytes(
        n_contexts(profile, split),
        profile.context_size,
        profile.d_model,
        profile.cache_dtype,
        contexts_per_shard(profile),
    )


def shard_bytes(profile: Profile, itemsize: int) -> int:
    return contexts_per_shard(profile) * (profile.context_size - 1) * profile.d_model * itemsize


def n_runs(profile: Profile) -> int:
    """SAEs trained: the paper's runs x seeds, plus the sparsity sweep x sweep seeds."""
    from hsae_utils.runs import RUNS, sweep_runs

    return len(RUNS) * len(profile.seeds) + len(sweep_runs(profile)) * len(profile.sweep_seeds)


def sae_param_bytes(profile: Profile) -> int:
    d, F = profile.d_model, profile.dict_size
    return (2 * d * F + d + F) * 4


# Classes of the embedded probing tasks (corpus.load_probing_tasks): sentiment 2, text source 4,
# language 6, programming language 4.
LOCAL_PROBING_CLASSES = 2 + 4 + 6 + 4


def probing_n_texts(profile: Profile) -> int:
    if profile.is_embedded:
        n_classes = LOCAL_PROBING_CLASSES
    else:
        from hsae_utils.evals.probing_tasks import SAEBENCH_DATASETS

        n_classes = sum(len(c) for c in SAEBENCH_DATASETS.values())
    return n_classes * (profile.probe_train_per_class + profile.probe_test_per_class)


def probing_cache_bytes(profile: Profile) -> int:
    """The probing activations memmap: every text at its cap (upper bound), BOS left out; stored
    in bf16 once fp32 would exceed 4 GiB (probing.store_dtype)."""
    rows = probing_n_texts(profile) * (profile.probe_max_tokens - 1)
    fp32 = rows * profile.d_model * 4
    return fp32 // 2 if fp32 > 4 * 2**30 else fp32


def splice_cache_bytes(profile: Profile) -> int:
    """Layer output (fp32) + tokens (int64) + keep (bool) + three fp32 per-position losses."""
    n = profile.n_eval_contexts * profile.context_size
    return n * (profile.d_model * 4 + 8 + 1 + 3 * 4)


def absorption_cache_bytes(profile: Profile) -> int:
    """Word activations (fp32) for the absorption probe; 0 = the whole alphabetic vocabulary,
    ~40% of the tokenizer's."""
    words = profile.absorption_vocab_size or int(0.4 * model_size(profile).vocab_size)
    return words * profile.d_model * 4


# Full-vocabulary tensors alive at once in evals.core.splice_losses per chunk of positions: clean
# log-probs, their exp, the SAE logits and log-probs, and the log-prob difference of the KL.
SPLICE_LOGIT_COPIES = 5


def splice_gpu_bytes(profile: Profile, n_saes: int = 1) -> int:
    """The splice's logits, computed LOGIT_CHUNK_TOKENS positions at a time, plus the final-norm
    inputs of the clean run and of every SAE of a batch of contexts (kept for the chunks)."""
    from hsae_utils.evals.core import LOGIT_CHUNK_TOKENS

    tokens = profile.eval_batch_contexts * profile.context_size
    logits = min(tokens, LOGIT_CHUNK_TOKENS) * model_size(profile).vocab_size * 4
    return logits * SPLICE_LOGIT_COPIES + (1 + n_saes) * tokens * profile.d_model * 4


def forward_workspace_bytes(profile: Profile, batch_contexts: int) -> int:
    """Activations of one layer for a batch (residual, MLP hidden, attention scores ~ S per head
    for 8 heads), fp32; the forward runs without grad, so layers do not accumulate."""
    S, d = profile.context_size, profile.d_model
    return batch_contexts * S * (4 * d + 3 * model_size(profile).d_mlp + 8 * S) * 4


# ============================================================================================
# Stages
# ============================================================================================
@dataclass
class Need:
    stage: str
    disk: float  # bytes written
    host_ram: float  # bytes, peak
    gpu: float  # bytes, peak (0 on CPU)
    seconds: float
    note: str = ""


def caching_need(profile: Profile) -> Need:
    r = rates(profile)
    tokens = (
        n_contexts(profile, "train") + n_contexts(profile, "validation")
    ) * profile.context_size
    flops = tokens * 2 * layer_params(profile) * (profile.layer + 1)
    # The shard being built: its fp32 rows, their concatenation, and the cache-dtype copy.
    host = 2 * shard_bytes(profile, 4) + shard_bytes(profile, dtype_bytes(profile.cache_dtype))
    gpu = weight_bytes(profile) + forward_workspace_bytes(profile, profile.model_batch_size)
    return Need(
        "caching (notebook 01)",
        split_cache_bytes(profile, "train") + split_cache_bytes(profile, "validation"),
        host + weight_bytes(profile),
        gpu if on_gpu(profile) else 0,
        flops / r.model_flops,
        f"{tokens:,} tokens in {profile.cache_dtype}",
    )


def training_run_need(profile: Profile) -> Need:
    """One SAE: the store's group of shards in RAM; params, grads and two Adam moments on the
    device; a checkpoint (params + moments) and the export on disk."""
    r = rates(profile)
    B, d, F = profile.train_batch_size, profile.d_model, profile.dict_size
    group = 8 * shard_bytes(profile, dtype_bytes(profile.cache_dtype))  # ActivationStore default
    flops = profile.train_steps * 12 * B * d * F
    read = profile.train_steps * B * d * dtype_bytes(profile.cache_dtype)
    seconds = flops / r.sae_flops + (read / r.read_bytes if on_gpu(profile) else 0)
    device = 4 * sae_param_bytes(profile) + B * (6 * F + 4 * d) * 4
    return Need(
        "training, one run",
        4 * sae_param_bytes(profile),
        group + B * d * 4,
        device if on_gpu(profile) else 0,
        seconds,
        f"{profile.train_steps:,} steps x {B:,}, d_sae {F:,}",
    )


def training_need(profile: Profile) -> Need:
    from hsae_utils.runs import RUNS, sweep_runs

    one, n = training_run_need(profile), n_runs(profile)
    per_pass = len(RUNS) + len(
        sweep_runs(profile)
    )  # the largest seed's runs, on the device at once
    r = rates(profile)
    # train_many reads the cache once per seed for all of the seed's runs: the read term once per
    # seed (on the GPU; on the CPU the measured step rate includes the reads)
    passes = len(set(profile.seeds) | set(profile.sweep_seeds))
    read = (
        profile.train_steps
        * profile.train_batch_size
        * profile.d_model
        * dtype_bytes(profile.cache_dtype)
    )
    seconds = (
        n
        * profile.train_steps
        * 12
        * profile.train_batch_size
        * profile.d_model
        * profile.dict_size
        / r.sae_flops
        + (passes * read / r.read_bytes if on_gpu(profile) else 0)
    )
    return Need(
        f"training, all {n} runs (notebook 02)",
        one.disk * n,
        one.host_ram,
        one.gpu * per_pass,
        seconds,
        f"one pass over the cache per seed ({passes}), every run of the seed on the "
        "device at once; steps as if one after another (twins share steps: less)",
    )


def after_hook_flops(profile: Profile) -> float:
    """FLOPs per token of the layers after the hook and the unembedding."""
    return 2 * (
        layer_params(profile) * (profile.n_layers - profile.layer - 1)
        + model_size(profile).vocab_size * profile.d_model
    )


def per_sae_eval_flops(profile: Profile) -> float:
    """The splice of one SAE: the model after the hook over the splice tokens (the clean pass is
    shared by the SAEs of a batch)."""
    return profile.n_eval_contexts * profile.context_size * after_hook_flops(profile)


def ground_truth_need(profile: Profile) -> Need:
    """Synthetic activations (sae_lens.synthetic), small SAEs on the CPU (measured on `local`:
    about 30 s, a few MB)."""
    return Need("ground truth (notebook 10)", 50e6, 2e9, 0, 120, "synthetic hierarchy, CPU")


def readings_need(profile: Profile) -> Need:
    """Each alternative reading's runs on one seed, trained in shared passes and evaluated."""
    from hsae_utils.experiment.sensitivity import alternatives  # pandas; only the plan needs it

    one, n = training_run_need(profile), sum(len(a.runs) for a in alternatives())
    r = rates(profile)
    seconds = (
        one.seconds * n
        + per_sae_eval_flops(profile) * n / r.model_flops
        + n * (host_seconds_per_sae(profile) + probe_fit_seconds(profile))
        + (
            n * l1_probe_flops(profile) / r.sae_flops + pooling_seconds(profile, n)
            if on_gpu(profile)
            else 0
        )
    )
    return Need(
        "sensitivity to the readings (notebook 11)",
        one.disk * n,
        one.host_ram,
        one.gpu * n,
        seconds,
        f"{n} runs on one seed, trained and evaluated",
    )


# Host-side (CPU) evaluation work per SAE on the CPU profiles: scikit-learn probe fits
# (absorption's k-sparse probes, sparse probing's top-k probes), the L1 probe and the
# bookkeeping. MEASURED on `local` (notebook 08 on 2 cores: ~9 s per SAE of which 5.5 s splice,
# so ~3.5 s), scaled by the number of words and texts probed.
LOCAL_HOST_S_PER_SAE = 3.5
# On CUDA the probe fits run on the device (`evals.logreg`, batched Newton in fp64) and the L1
# probe too; what stays on the host per SAE is the bookkeeping: the top-k selection by mean
# difference (numpy), gathering each problem's rows, absorption's per-letter rules on the test
# words (fp64, CPU), the F1 / accuracy tables. MEASURED on `local` (2 cores, see
# docs/resources.md): LOCAL_BOOKKEEPING_S_PER_SAE of the per-SAE absorption + probing time is
# neither a probe fit, the L1 probe nor the pooling; scaled like the above.
LOCAL_BOOKKEEPING_S_PER_SAE = 0.25
# Newton steps per batched fit (~8 from zero to a 1e-8 gradient on the tests' problems, plus
# line-search evaluations) and the device's efficiency on these small, memory-bound batched
# products: ESTIMATES until scripts/gpu_check.sh times them.
PROBE_NEWTON_STEPS, PROBE_MEMORY_EFFICIENCY, PROBE_STEP_LAUNCH_S = 12, 0.2, 1e-3


def absorption_words(profile: Profile) -> int:
    return profile.absorption_vocab_size or int(0.4 * model_size(profile).vocab_size)


def host_seconds_per_sae(profile: Profile) -> float:
    """Per-SAE host time of absorption and probing: everything on a CPU profile, the
    bookkeeping only on a GPU profile (its probe fits run on the device)."""
    local = get_profile("local")
    scale = (absorption_words(profile) + probing_n_texts(profile)) / (
        absorption_words(local) + probing_n_texts(local)
    )
    return (LOCAL_BOOKKEEPING_S_PER_SAE if on_gpu(profile) else LOCAL_HOST_S_PER_SAE) * scale


def probe_fit_seconds(profile: Profile) -> float:
    """Per SAE on the device: absorption's k-sparse fits (26 letters x k = 1..10, each k one
    batched fit over the train words) and probing's top-k fits (every class x each k, one
    batched fit per k over ~2 x probe_train_per_class texts), Newton in fp64. Memory-bound: each
    Newton step reads the problems' rows [P, N, k + 1] about 6 times (gradient, Hessian, step,
    line search), at PROBE_MEMORY_EFFICIENCY of the card's bandwidth, plus a launch / host-sync
    cost per step. 0 on a CPU profile (the fits are in host_seconds_per_sae there)."""
    card = target_card(profile)
    if card is None:
        return 0.0
    from hsae_utils.evals.absorption import LETTERS, MAX_K

    bw = card.memory_bandwidth * PROBE_MEMORY_EFFICIENCY
    n_abs = 0.8 * absorption_words(profile)
    abs_bytes = sum(len(LETTERS) * n_abs * (k + 1) for k in range(1, MAX_K + 1)) * 6 * 8
    n_classes = probing_n_texts(profile) // (
        profile.probe_train_per_class + profile.probe_test_per_class
    )
    n_probe = 2 * profile.probe_train_per_class
    probe_bytes = sum(n_classes * n_probe * (k + 1) for k in profile.probe_k_values) * 6 * 8
    steps = PROBE_NEWTON_STEPS * (MAX_K + len(profile.probe_k_values))
    return PROBE_NEWTON_STEPS * (abs_bytes + probe_bytes) / bw + steps * PROBE_STEP_LAUNCH_S


def pooling_seconds(profile: Profile, n_saes: int) -> float:
    """Sparse probing's pooled latents (`probing.sae_features_many`): one read of the probing
    store for all SAEs, and every SAE's encoder over its rows (2 d F FLOPs per row and SAE)."""
    rows = probing_n_texts(profile) * (profile.probe_max_tokens - 1)
    r = rates(profile)
    read = probing_cache_bytes(profile) / (
        r.read_bytes if on_gpu(profile) else CPU_RATES.read_bytes
    )
    return read + n_saes * rows * 2 * profile.d_model * profile.dict_size / r.sae_flops


def l1_probe_flops(profile: Profile) -> float:
    """Absorption's L1 probe per SAE (evals.absorption.train_l1_probe, on the SAE's device): 50
    epochs over the train words (80 %), forward and backward of a [F, 26] linear layer."""
    return 50 * 0.8 * absorption_words(profile) * profile.dict_size * 26 * 6


def evaluation_need(profile: Profile) -> Need:
    r, n_saes = rates(profile), n_runs(profile)
    lp, after = layer_params(profile), after_hook_flops(profile)
    splice_tokens = profile.n_eval_contexts * profile.context_size
    probe_tokens = probing_n_texts(profile) * profile.probe_max_tokens
    absorb_tokens = (
        absorption_words(profile) * 6 * (profile.absorption_icl_examples + 1)
    )  # ~6 tokens per example
    to_layer = 2 * lp * (profile.layer + 1)
    model_side = splice_tokens * (to_layer + 2 * after) + (probe_tokens + absorb_tokens) * to_layer
    seconds = (
        (model_side + per_sae_eval_flops(profile) * n_saes) / r.model_flops
        + n_saes * host_seconds_per_sae(profile)
        + n_saes * probe_fit_seconds(profile)
        + (n_saes * l1_probe_flops(profile) / r.sae_flops if on_gpu(profile) else 0)
        + (pooling_seconds(profile, n_saes) if on_gpu(profile) else 0)
    )
    disk = (
        splice_cache_bytes(profile) + absorption_cache_bytes(profile) + probing_cache_bytes(profile)
    )
    valid_rows = n_contexts(profile, "validation") * (profile.context_size - 1) * profile.d_model
    host = (
        valid_rows * (4 + 8) + splice_cache_bytes(profile) + weight_bytes(profile)
    )  # fp32 + fp64 mean
    gpu = weight_bytes(profile) + splice_gpu_bytes(profile, n_saes)
    return Need(
        "evaluation (notebook 08)",
        disk,
        host,
        gpu if on_gpu(profile) else 0,
        seconds,
        f"{n_saes} SAEs; "
        + (
            f"probe fits on the device {probe_fit_seconds(profile):,.1f} s and host (CPU) "
            f"bookkeeping {host_seconds_per_sae(profile):,.1f} s per SAE; probing pooling "
            f"{pooling_seconds(profile, n_saes):,.0f} s; "
            if on_gpu(profile)
            else f"host (CPU) {host_seconds_per_sae(profile):,.0f} s per SAE; "
        )
        + f"splice {profile.n_eval_contexts:,} contexts; probing "
        f"{probing_n_texts(profile):,} texts ({probing_cache_bytes(profile) / GB:.1f} GB "
        "memmap)",
    )


def figures_need(profile: Profile) -> Need:
    """Reads the results tables; a few plots (measured on `local`: seconds, a few MB)."""
    return Need("figures (notebook 09)", 20e6, 1e9, 0, 60, "")


FEATURE_SAES = 4  # notebook 12: TopK, BatchTopK, L1 and the HierarchicalSAE, seed 42
FEATURE_PASSES = 5  # the statistics' passes over the validation rows (`features.stats`)
FEATURE_BYTES_PER_LATENT = 30_000  # stored statistics + browser page (~30 contexts of 12 tokens)


def features_need(profile: Profile) -> Need:
    """Notebook 12: the row -> token map (one model pass over the validation split, only when the
    cache dropped massive activations), then per SAE a few encoding passes over the validation
    rows and its logit effects (d_sae directions through the unembedding)."""
    r = rates(profile)
    tokens = n_contexts(profile, "validation") * profile.context_size
    rows = n_contexts(profile, "validation") * (profile.context_size - 1)
    row_map = tokens * 2 * layer_params(profile) * (profile.layer + 1) / r.model_flops
    per_sae = (
        FEATURE_PASSES * rows * 2 * profile.d_model * profile.dict_size / r.sae_flops
        + profile.dict_size * 2 * profile.d_model * model_size(profile).vocab_size / r.model_flops
    )
    host = rows * profile.d_model * 4 + weight_bytes(profile)
    return Need(
        "features (notebook 12)",
        FEATURE_SAES * FEATURE_BYTES_PER_LATENT * profile.dict_size,
        host,
        0,
        row_map + FEATURE_SAES * per_sae,
        f"{FEATURE_SAES} SAEs, statistics and browser",
    )


def plan(profile: Profile) -> list[Need]:
    """Every stage's needs, with the batch sizes of the profile's target card (`fit_to_card`)."""
    return plan_for(sized_for_target(profile))


def plan_for(profile: Profile) -> list[Need]:
    """Every stage's needs at the profile's own batch sizes."""
    return [
        caching_need(profile),
        training_run_need(profile),
        training_need(profile),
        evaluation_need(profile),
        figures_need(profile),
        ground_truth_need(profile),
        readings_need(profile),
        features_need(profile),
    ]


def totals(needs: list[Need]) -> Need:
    """Disk and time add up (the single-run row is inside the all-runs row); memory is a peak."""
    counted = [n for n in needs if n.stage != "training, one run"]
    return Need(
        "whole run",
        sum(n.disk for n in counted),
        max(n.host_ram for n in needs),
        max(n.gpu for n in needs),
        sum(n.seconds for n in counted),
    )


# ============================================================================================
# Printing
# ============================================================================================
def _gb(x: float) -> str:
    return "-" if x == 0 else f"{x / GB:,.2f} GB" if x < 10 * GB else f"{x / GB:,.0f} GB"


def _time(s: float) -> str:
    return f"{s:,.0f} s" if s < 120 else f"{s / 60:,.0f} min" if s < 7200 else f"{s / 3600:,.1f} h"


def _batches(profile: Profile) -> str:
    return (
        f"model batch {profile.model_batch_size} contexts, splice batch "
        f"{profile.eval_batch_contexts} contexts"
    )


def format_plan(profile: Profile, markdown: bool = False) -> str:
    needs = plan(profile)
    rows = [
        (n.stage, _gb(n.disk), _gb(n.host_ram), _gb(n.gpu), _time(n.seconds), n.note)
        for n in needs + [totals(needs)]
    ]
    head = ("stage", "disk", "host RAM", "GPU memory", "time", "what")
    card = target_card(profile)
    where = (
        "CPU throughputs measured on a 2-core machine"
        if card is None
        else f"planned for one {card.name} (its published peak x the stated efficiencies; model "
        f"forward in {run_dtype(profile)}; batches sized for its memory: "
        f"{_batches(sized_for_target(profile))}): GPU times and memory are ESTIMATES"
    )
    title = (
        f"Resources of profile `{profile.name}` ({profile.model_name}, layer {profile.layer}, "
        f"{profile.n_train_tokens:,} train tokens, cache {profile.cache_dtype}); {where}. "
        "Generated by `python -m hsae_utils.pipeline.resources plan "
        f"{profile.name}{' --markdown' if markdown else ''}`."
    )
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return title + "\n\n" + "\n".join(lines) + "\n" + target_line(profile, needs) + "\n"
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join(
        [title, fmt(head), fmt(["-" * w for w in widths])]
        + [fmt(r) for r in rows]
        + [target_line(profile, needs)]
    )


def target_line(profile: Profile, needs: list[Need]) -> str:
    """PASS / MISS of the profile's time target (TIME_TARGET_S), naming the largest stage."""
    target = TIME_TARGET_S.get(profile.name)
    if target is None:
        return ""
    total = totals(needs).seconds
    largest = max((n for n in needs if n.stage != "training, one run"), key=lambda n: n.seconds)
    card = target_card(profile)
    return (
        f"\nTime target: the whole run within {_time(target)} on one "
        f"{card.name if card else 'CPU'}: {'PASS' if total <= target else 'MISS'} "
        f"(estimate {_time(total)}; largest stage: {largest.stage}, {_time(largest.seconds)})."
    )


# ============================================================================================
# The preflight
# ============================================================================================
def _existing_parent(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def available_ram() -> int | None:
    """Bytes of host RAM available: /proc/meminfo's MemAvailable, else free pages; None if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def hub_repos(profile: Profile) -> list[tuple[str, str]]:
    """(repo type, id) of everything a hub profile downloads: the model, the text dataset and
    SAEBench's probing datasets (several task names share one repository)."""
    from hsae_utils.data.hub import replica_enabled

    if profile.is_embedded or replica_enabled(profile):  # local replicas: nothing to download
        return []
    from hsae_utils.evals.probing_tasks import SAEBENCH_DATASETS

    repos = [("model", profile.model_name)]
    if profile.dataset != "embedded":
        repos.append(("dataset", profile.dataset))
    for name in SAEBENCH_DATASETS:
        repo = (
            "LabHC/bias_in_bios"
            if name.startswith("LabHC/bias_in_bios")
            else name.removesuffix("_sentiment")
        )
        if ("dataset", repo) not in repos:
            repos.append(("dataset", repo))
    return repos


def _in_local_cache(repo_type: str, repo: str) -> bool:
    from huggingface_hub import constants

    return (Path(constants.HF_HUB_CACHE) / f"{repo_type}s--{repo.replace('/', '--')}").is_dir()


def hub_problem(repo_type: str, repo: str) -> str | None:
    """None when `repo` can be read, else why not and the fix: no network, gated without an
    accepted licence / token, or missing."""
    from huggingface_hub import auth_check, constants
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    url = f"https://huggingface.co/{'datasets/' if repo_type == 'dataset' else ''}{repo}"
    no_network = (
        f"{repo_type} {repo}: no network access to the Hugging Face hub"
        "{why}, and it is not in the local hub cache: run where huggingface.co is "
        f"reachable, or download it there first (`hf download {repo}"
        f"{' --repo-type dataset' if repo_type == 'dataset' else ''}`) and copy the hub "
        "cache (HF_HOME) here, then run with HF_HUB_OFFLINE=1."
    )
    if constants.HF_HUB_OFFLINE:
        return (
            None
            if _in_local_cache(repo_type, repo)
            else no_network.format(why=" (HF_HUB_OFFLINE=1)")
        )
    try:
        auth_check(repo, repo_type=repo_type)
        return None
    except GatedRepoError:
        return (
            f"{repo_type} {repo} is gated: accept its licence at {url} with your account, then "
            "set HF_TOKEN or run `hf auth login` on this machine."
        )
    except RepositoryNotFoundError:
        return (
            f"{repo_type} {repo} was not found on the hub (or is private): check the id in "
            "hsae_utils/config.py, or log in with `hf auth login` if it is private."
        )
    except Exception as err:  # connection refused, DNS, timeout, proxy
        if _in_local_cache(repo_type, repo):
            return None
        return no_network.format(why=f" ({type(err).__name__})")


def gpu_problems(profile: Profile, memory_bytes: float) -> list[str]:
    """The GPU-memory check for a card of `memory_bytes`, with the batch sizes sized for it
    (`fit_to_card`); empty when the run fits."""
    try:
        sized = fit_to_card(profile, memory_bytes)
    except ValueError as err:
        return [f"GPU memory: {err}"]
    needs = plan_for(sized)
    total = totals(needs)
    if total.gpu <= memory_bytes:
        return []
    stage = max(needs, key=lambda n: n.gpu).stage
    return [
        f"GPU memory: {stage} needs about {_gb(total.gpu)} even at {_batches(sized)}, the GPU "
        f"has {_gb(memory_bytes)}: use a larger GPU."
    ]


def device_batches_line(profile: Profile) -> str | None:
    """The batch sizes the notebooks will run on the card visible here (`sized_for_device`, the
    call they make); None where they run the profile's own sizes (the CPU) or where the card is
    too small (a problem `check` reports)."""
    if profile.device == "cpu":
        return None
    import torch  # only for a profile that may run on CUDA

    if not torch.cuda.is_available():
        return None
    device = profile.resolve_device()
    try:
        sized = sized_for_device(profile, device)
    except ValueError:
        return None
    return (
        f"\nBatches the notebooks run on this GPU ({_gb(card_memory(device))}): {_batches(sized)}."
    )


def check(profile: Profile, hub: bool = True, here: bool = True) -> list[str]:
    """Problems that would stop the run, each naming its fix; empty when it can go ahead.
    `here=False`: the heavy stages run as cluster jobs, which request their own RAM and GPU."""
    needs = plan(profile)
    total = totals(needs)
    problems = []
    root = _existing_parent(profile.output_dir)
    free = shutil.disk_usage(root).free
    have = folder_bytes(profile.output_dir)  # caches and runs already there are reused
    missing = total.disk - have
    if missing * 1.05 > free:
        problems.append(
            f"disk: the run writes about {_gb(total.disk)} under {profile.output_dir} "
            f"({have / GB:,.2f} GB already there) but {root} has {_gb(free)} free: free space, or point "
            "HSAE_OUTPUT_ROOT at a larger disk."
        )
    ram = available_ram() if here else None
    if ram is not None and total.host_ram > ram:
        stage = max(needs, key=lambda n: n.host_ram).stage
        problems.append(
            f"host RAM: {stage} needs about {_gb(total.host_ram)}, {_gb(ram)} is "
            "available: use a larger machine or smaller shard_tokens."
        )
    if on_gpu(profile) and here:
        import torch

        if not torch.cuda.is_available():
            problems.append(
                f"GPU: profile {profile.name} runs on a CUDA GPU and none is visible "
                "here: run on a GPU machine (or a CPU profile: --profile local)."
            )
        else:
            problems += gpu_problems(profile, card_memory(profile.resolve_device()))
    if hub:
        for repo_type, repo in hub_repos(profile):
            problem = hub_problem(repo_type, repo)
            if problem:
                problems.append("hub: " + problem)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hsae_utils.pipeline.resources", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("command", choices=("plan", "check"))
    parser.add_argument("profile")
    parser.add_argument("--markdown", action="store_true", help="plan: a markdown table")
    parser.add_argument("--no-hub", action="store_true", help="check: skip the hub access checks")
    parser.add_argument(
        "--jobs",
        action="store_true",
        help="check: the stages run as cluster jobs; skip the host RAM and GPU checks",
    )
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse exits 2 on bad usage, 0 on --help
        return int(exit_.code or 0)
    try:
        profile = get_profile(args.profile)
    except ValueError as err:
        print(err, file=sys.stderr)
        return 2
    print(format_plan(profile, markdown=args.markdown))
    if args.command == "plan":
        return 0
    problems = check(profile, hub=not args.no_hub, here=not args.jobs)
    line = None if args.jobs else device_batches_line(profile)
    if line:
        print(line)
    if problems:
        print(f"\nRefusing to start profile {profile.name}:", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    checked = ["disk"] + ([] if args.jobs else ["memory"] + (["GPU"] if on_gpu(profile) else []))
    checked += ["hub access"] if hub_repos(profile) and not args.no_hub else []
    print(
        f"\nPreflight of profile {profile.name}: "
        f"{', '.join(checked[:-1]) + ' and ' if len(checked) > 1 else ''}{checked[-1]} "
        f"{'are' if len(checked) > 1 else 'is'} fine"
        f"{' (cluster jobs request their own RAM and GPU)' if args.jobs else ''}."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
