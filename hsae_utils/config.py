"""Run profiles, defined in one place.

A profile fixes the model, hook, corpus and every budget of the pipeline. Notebooks take a
`profile` papermill parameter and call `get_profile(profile)`; `run_all.sh --profile NAME` passes it.

- `paper`: the paper's setting (Gemma-2-2B, layer 19, OpenWebText, 4,882 steps x 2,048). Needs a GPU
  and Hugging Face access to the gated model.
- `local` (default): the embedded SmolLM2-135M and the embedded corpus on CPU, sized so the whole
  pipeline fits `hsae_utils.pipeline.cli.PIPELINE_BUDGETS_MIN` on a 2-core machine (the last run's
  wall time per notebook: docs/results.md).
- `smoke`: the same code with tiny budgets; used by the notebook tests.
- `paper-tiny`: every setting of `paper` (model id, dataset ids, evaluation rules) with tiny sizes,
  reading local replicas of the hub repositories (a tiny random Gemma-2 with gemma-2-2b's
  architecture, built at set-up): the paper's code path end to end on CPU in minutes.
- `colab`: the embedded model on a free Colab T4 GPU (16 GB) at a larger budget;
  `colab-gemma`: Gemma-2-2B on the same GPU, chosen by the notebooks' Colab set-up cell when the
  Hugging Face token can read it (`hsae_utils.pipeline.colab.choose_profile`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
EMBEDDED_MODEL = "SmolLM2-135M-Instruct"

# Gemma-2-2B has 26 layers and the paper hooks layer 19; other models use the same relative depth.
PAPER_LAYER, PAPER_N_LAYERS = 19, 26
CACHE_DTYPES = ("float32", "bfloat16", "float16")  # activation-cache dtypes on disk


def cache_root() -> Path:
    """Where converted models, downloads and hub replicas are cached: $HSAE_CACHE_DIR or .cache."""
    return Path(os.environ.get("HSAE_CACHE_DIR", REPO_ROOT / ".cache"))


def layer_at_paper_depth(n_layers: int) -> int:
    """Layer index at the paper's relative depth (19 of 26), e.g. 22 of SmolLM2's 30."""
    return round(PAPER_LAYER / PAPER_N_LAYERS * n_layers)


@dataclass(frozen=True)
class Profile:
    name: str
    # --- model -------------------------------------------------------------------------------
    model_name: str  # a Hugging Face id (paper) or EMBEDDED_MODEL
    n_layers: int
    d_model: int
    layer: int
    device: str = "auto"  # "auto" picks cuda when available
    model_dtype: str = "float32"  # fp32 on CPU; the paper profile may use bfloat16 on GPU
    # Read hub ids (model, datasets) from local replicas built at set-up instead of the hub
    # (hsae_utils.data.hub; the environment variable HSAE_HUB_REPLICA=1/0 overrides it).
    hub_replica: bool = False
    # --- text ------------------------------------------------------------------------------
    dataset: str = "embedded"  # "embedded" or a `datasets` id streamed from the hub
    dataset_text_field: str = "text"
    context_size: int = 128
    # --- activation cache ------------------------------------------------------------------
    # `local`: ~1,000 contexts cache in about 4 minutes on 2 cores (the model runs ~500 tokens/s
    # up to layer 22); SAEs then see each token ~8 times (500 steps x 2,048).
    n_train_tokens: int = 131_072
    n_valid_tokens: int = 16_384
    n_norm_tokens: int = 10_000  # "normalized using statistics from a 10K token sample"
    model_batch_size: int = 32  # contexts per model forward while caching
    shard_tokens: int = 16_384
    # Dtype of the cached activations on disk (read back as fp32 for training). "bfloat16" halves
    # disk and host RAM; "float16" would too, but its range (max 65,504) can overflow on large
    # residuals, so GPU profiles use bf16 (its rounding error, <= 2^-9 relative, is far below an
    # SAE's reconstruction error). CPU profiles keep fp32.
    cache_dtype: str = "float32"  # "float32", "bfloat16" or "float16"
    # Tokens whose residual norm exceeds this x the batch median ("massive activations", e.g.
    # SmolLM2's first token after BOS) are treated like BOS: not trained on, not averaged over.
    massive_norm_factor: float | None = 10.0
    # --- SAE training ----------------------------------------------------------------------
    d_sae: int | None = None  # None = d_model ("dictionary size matched to d")
    # `local`: 500 steps x the paper's batch of 2,048 for every run of the registry (`runs.py`: 8
    # configurations x 3 seeds, plus the one-seed sweep), one pass over the cache per seed.
    # Windows, resampling and merging keep the paper's 100 steps.
    train_steps: int = 500
    train_batch_size: int = 2048
    seeds: tuple[int, ...] = (42, 43, 44)
    log_every: int = 10
    checkpoint_every: int = 100
    window_size: int = 100  # sliding window of firing rates (steps)
    merge_every: int = 100  # clustering interval (steps)
    resample_every: int = 100  # resampling check interval (steps)
    # Sparsity sweeps for the sparsity-fidelity frontier of every family (notebook 02, in the
    # seed's shared pass): TopK and BatchTopK at k = topk_k x each factor (up to 7.15 x 80 = 572 of
    # 576 latents at `local`: just above the HierarchicalSAE's L0 of ~570, so that a baseline at
    # least as dense brackets it and matched-L0 verdicts can decide), L1 at each lambda (0.001 and
    # 0.003 bracket that L0 within the L1 family too: at 0.01 L1 fires 561 and its fidelity still
    # rises with L0), and the HierarchicalSAE's full model and stage 1 at lambda_0 =
    # each factor x 1/sqrt(d_sae) (its default L0 is ~570 of 576; the factors reach the
    # baselines' L0 range). One seed each.
    sweep_k_factors: tuple[float, ...] = (0.25, 4.0, 5.6, 6.8, 7.15)
    sweep_l1_coefficients: tuple[float, ...] = (0.001, 0.003, 0.01, 0.2, 1.0)
    # Why up to 512: at `local` a constant L1 penalty gives L0 524 / 385 / 104 at lambda 0.04 /
    # 0.2 / 1.0 (notebook 02's sweep); Eq. 3 decays lambda_t to 0, so stage 1 needs about twice
    # the constant lambda for the same L0 (8x-128x: L0 from ~450 down to ~40), and stage 5's
    # alpha_t (median 0.3, clamped at 0.1) scales it down again by ~3-10x (32x-512x).
    sweep_hsae_lambda_factors: tuple[float, ...] = (8.0, 32.0, 128.0, 512.0)
    sweep_seeds: tuple[int, ...] = (42,)
    # --- evaluation ------------------------------------------------------------------------
    n_eval_contexts: int = 32  # contexts of the validation split spliced for KL / CE (see below)
    # --- evaluation budgets (notebook 08: hsae_utils.evals) --------------------------------
    # `local` is sized so that evaluating every SAE of the registry, the model-side work included,
    # fits the pipeline's budget on a 2-core CPU (notebook 08's measured time: the timing line of
    # docs/results.md). Everything the language model computes
    # (splice inputs, clean / zero-ablated losses, absorption and probing activations) is cached
    # once under `output_dir / "eval_cache"` and shared by every SAE; per SAE only the SAE passes
    # and the splice through the layers after the hook remain. Reconstruction metrics use the whole
    # validation split. `paper` follows SAEBench's defaults, `smoke` takes seconds.
    # Measured on 2 cores (SmolLM2, layer 22): the splice costs ~1.25 ms per token per SAE (the
    # 7 layers after the hook and the 49k-way unembedding), hence n_eval_contexts = 32 (4,096
    # tokens, ~5.5 s per SAE); the model reads ~550 tokens/s up to the hook, hence 40 probing texts
    # per class (~47k tokens, ~90 s: the language and code texts are long; `local` now tests on
    # more, shorter texts for power: see its profile) and 1,300 absorption
    # words (~25 s with the shared-prefix prompts). Measured total: about 6 minutes cold, under 4
    # minutes once the model-side cache exists.
    eval_batch_contexts: int = 8  # contexts per splice batch (bounds the [B, S, vocab] logits)
    absorption_vocab_size: int = 1300  # alphabetic tokens, letter-balanced; 0 = all (SAEBench)
    absorption_icl_examples: int = 10  # in-context examples per prompt (SAEBench: 10)
    absorption_min_letters: int = 20  # letters with probe F1 > 0.6 needed (SAEBench: 20)
    probe_train_per_class: int = 32  # sparse probing texts per class (SAEBench: 2,000)
    probe_test_per_class: int = 8  # (SAEBench: 500)
    probe_max_tokens: int = 128  # tokens per probing text, BOS included (SAEBench: 128)
    probe_k_values: tuple[int, ...] = (1, 5, 20)  # the paper's Top-1 / Top-5 / Top-20
    # A SAEBench probing dataset that cannot be read stops the evaluation (named, with the cause);
    # True skips it instead, reported by name (hub profiles; notebook 08's parameter).
    skip_unavailable_probing: bool = False
    eval_seed: int = 42  # vocabulary / text sampling, negatives, probe initialisation
    # --- ground truth (notebook 10) ---------------------------------------------------------
    # Seeds of the absorption verdict (the HierarchicalSAE vs TopK at its L0 on the synthetic
    # hierarchy): enough that the paired test's MDE reaches the claimed effect. On `local`'s
    # world three seeds gave a spread of the paired differences of 0.0306 against a claimed
    # effect of 0.0152 (34 % of TopK's 0.0447): TTestPower (alpha 0.05, power 0.8) needs 34
    # pairs (`ground_truth.seeds_for_power`). Two runs per extra seed, ~1 s each on 2 cores.
    ground_truth_verdict_seeds: int = 34
    extra: dict = field(default_factory=dict)  # free-form knobs for later stages

    def __post_init__(self):
        """Refuse impossible values when the profile is made, before any long work starts."""
        if not 0 <= self.layer < self.n_layers:
            raise ValueError(
                f"Profile {self.name!r}: layer {self.layer} is out of range for a model with "
                f"{self.n_layers} layers: pass layer=0..{self.n_layers - 1}."
            )
        if self.d_sae is not None and self.d_sae <= 0:
            raise ValueError(
                f"Profile {self.name!r}: d_sae must be positive (or None for "
                f"d_model), got {self.d_sae}."
            )
        positive = (
            "n_layers",
            "d_model",
            "n_train_tokens",
            "n_valid_tokens",
            "n_norm_tokens",
            "model_batch_size",
            "shard_tokens",
            "train_steps",
            "train_batch_size",
            "log_every",
            "checkpoint_every",
            "window_size",
            "merge_every",
            "resample_every",
            "n_eval_contexts",
            "eval_batch_contexts",
            "ground_truth_verdict_seeds",
        )
        bad = [f"{k}={getattr(self, k)!r}" for k in positive if getattr(self, k) <= 0]
        if self.context_size < 2:  # BOS plus at least one token
            bad.append(f"context_size={self.context_size!r} (needs >= 2)")
        if not self.seeds:
            bad.append("seeds=() (needs at least one seed)")
        if bad:
            raise ValueError(
                f"Profile {self.name!r}: invalid value(s) {', '.join(bad)}; "
                "counts and sizes must be positive integers."
            )
        if self.cache_dtype not in CACHE_DTYPES:
            raise ValueError(
                f"Profile {self.name!r}: cache_dtype={self.cache_dtype!r}; pass one "
                f"of {', '.join(CACHE_DTYPES)}."
            )
        n_valid_contexts = max(1, self.n_valid_tokens // self.context_size)
        if self.n_eval_contexts > n_valid_contexts:  # the splice reads the validation split
            raise ValueError(
                f"Profile {self.name!r}: n_eval_contexts={self.n_eval_contexts} but the "
                f"validation split holds {n_valid_contexts} contexts of {self.context_size} "
                f"tokens: pass n_eval_contexts<={n_valid_contexts} or n_valid_tokens>="
                f"{self.n_eval_contexts * self.context_size}."
            )

    @property
    def hook_name(self) -> str:
        return f"blocks.{self.layer}.hook_resid_post"

    @property
    def dict_size(self) -> int:
        return self.d_sae or self.d_model

    @property
    def topk_k(self) -> int:
        """The paper's k = 320 at 2,304 latents, scaled by d_sae / 2,304 for other sizes."""
        return max(1, round(320 * self.dict_size / 2304))

    @property
    def is_embedded(self) -> bool:
        return self.model_name == EMBEDDED_MODEL

    @property
    def output_dir(self) -> Path:
        root = Path(os.environ.get("HSAE_OUTPUT_ROOT", REPO_ROOT / "outputs"))
        return root / self.name

    @property
    def cache_dir(self) -> Path:
        return self.output_dir / "activations"

    @property
    def sae_dir(self) -> Path:
        return self.output_dir / "saes"

    @property
    def results_dir(self) -> Path:
        return self.output_dir / "results"

    def resolve_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_SMOLLM2 = dict(model_name=EMBEDDED_MODEL, n_layers=30, d_model=576, layer=layer_at_paper_depth(30))
# The schedule and evaluation budgets of the test-sized profiles (smoke, paper-tiny): seconds each.
_TINY_RUN = dict(
    seeds=(42,),
    window_size=10,
    merge_every=10,
    resample_every=10,
    sweep_k_factors=(0.25,),
    sweep_l1_coefficients=(1.0,),
    sweep_hsae_lambda_factors=(16.0,),
    absorption_vocab_size=156,
    ground_truth_verdict_seeds=4,
    absorption_icl_examples=4,
    probe_train_per_class=8,
    probe_test_per_class=4,
)
_TINY_GEMMA_LAYERS = 10  # hsae_utils.data.tiny_gemma.CONFIG["num_hidden_layers"]
_GEMMA = dict(
    model_name="google/gemma-2-2b",
    n_layers=26,
    d_model=2304,
    layer=PAPER_LAYER,
    model_dtype="float32",
    dataset="Skylion007/openwebtext",
    cache_dtype="bfloat16",
)  # bf16, not fp16: Gemma-2 residuals can overflow fp16

PROFILES: dict[str, Profile] = {
    "paper": Profile(
        name="paper",
        **_GEMMA,
        device="cuda",
        n_train_tokens=10_000_000,  # "approximately 10M training tokens"
        n_valid_tokens=100_000,  # "a held-out validation set of 100K tokens"
        model_batch_size=64,
        shard_tokens=262_144,
        train_steps=4882,
        train_batch_size=2048,
        log_every=50,
        checkpoint_every=500,
        # SAEBench splices 200 batches x 16 contexts (3,200); the paper evaluates on "a held-out
        # validation set of 100K tokens", which holds 781 contexts of 128: we keep the paper's
        # split and cut the splice to all of it (781 x 128 = 99,968 tokens), not SAEBench's 3,200.
        n_eval_contexts=100_000 // 128,
        # evaluation budgets: SAEBench's defaults
        eval_batch_contexts=16,
        absorption_vocab_size=0,
        probe_train_per_class=2000,
        probe_test_per_class=500,
    ),
    # The paper's path on CPU: google/gemma-2-2b and the hub datasets resolve to local replicas
    # (hsae_utils.data.hub, hsae_utils.data.tiny_gemma: 10 layers, d_model 64, hooked at the paper's depth);
    # the sizes are smoke-like so that every notebook runs in a few minutes of CPU in total.
    "paper-tiny": Profile(
        name="paper-tiny",
        **{
            **_GEMMA,
            "n_layers": _TINY_GEMMA_LAYERS,
            "d_model": 64,
            "layer": layer_at_paper_depth(_TINY_GEMMA_LAYERS),
        },
        device="cpu",
        hub_replica=True,
        n_train_tokens=16_384,
        n_valid_tokens=4096,
        n_norm_tokens=2048,
        model_batch_size=16,
        shard_tokens=4096,
        train_steps=60,
        train_batch_size=512,
        **_TINY_RUN,
        log_every=10,
        checkpoint_every=30,
        n_eval_contexts=16,
        eval_batch_contexts=4,
        probe_max_tokens=64,
    ),
    "local": Profile(
        name="local",
        **_SMOLLM2,
        # Sparse probing with the power to see the paper's 15 pp (70.1 % -> 85.3 %): a two-sided
        # two-proportion test (alpha 0.05, power 0.8; Cohen's h = 2 asin sqrt .853 - 2 asin sqrt
        # .701 = 0.372) needs n = 2 (1.960 + 0.842)^2 / h^2 ~ 115 test texts per group
        # (power.proportion_sample_size(0.701, 0.853) = 115). A one-vs-rest probe is tested on
        # its class's texts plus as many negatives: 2 x 58 = 116 >= 115 (8 per class gave 16:
        # MDE 29 pp). Texts cut to 64 tokens (language and code stay recognisable; SAEBench:
        # 128): 1,440 texts = 65.2k tokens instead of 640 texts of up to 128 = 47.0k. Measured
        # (build_probing_data, model side and LLM probes, on a shared 2-core machine): 600 s vs
        # 381 s, x1.57; on an idle machine (~90 s before) that is ~50 s more, plus ~15 s of SAE
        # encoding (18k more tokens x 24 SAEs).
        probe_test_per_class=58,
        probe_max_tokens=64,
        # Absorption with power: 1,300 words left each letter ~10 test words (~8 probe-positive);
        # 5,200 (letter-balanced, 200 per letter where the tokenizer has them) give ~40. SAEBench
        # takes every alphabetic token (`absorption_vocab_size=0`: 47,078 of SmolLM2's 49,152),
        # which costs too much here: measured (CPU seconds of one thread, as ratios to 1,300
        # words) x33 on the model side (~5 min more on an idle 2-core machine, once per output
        # folder: cached in eval_cache/) and x4-7 per SAE (~2.3 s more for each of ~47 SAEs);
        # 5,200 words: x4 model side (~30 s more), x1.5 per SAE (~15 s more in all).
        absorption_vocab_size=5200,
    ),
    "smoke": Profile(
        name="smoke",
        **_SMOLLM2,
        n_train_tokens=4096,
        n_valid_tokens=1024,
        n_norm_tokens=1024,
        model_batch_size=8,
        shard_tokens=1024,
        train_steps=40,
        train_batch_size=256,
        **_TINY_RUN,
        log_every=5,
        checkpoint_every=20,
        n_eval_contexts=4,
        # evaluation budgets: a few seconds
        eval_batch_contexts=2,
        probe_max_tokens=32,
    ),
    # Free Colab T4 (16 GB, no fast bf16). SmolLM2 in fp32: the embedded corpus holds ~2.0M train
    # tokens, so 1.5M are cached (3.6 GB at d = 576); 2,000 steps x 2,048 see each ~2.6 times.
    # SAE steps take milliseconds on the GPU; caching and evaluation take a few minutes each.
    "colab": Profile(
        name="colab",
        **_SMOLLM2,
        n_train_tokens=1_572_864,
        n_valid_tokens=65_536,
        model_batch_size=64,
        shard_tokens=65_536,
        train_steps=2000,
        log_every=20,
        checkpoint_every=500,
        n_eval_contexts=256,
        eval_batch_contexts=16,
        absorption_vocab_size=5000,
        probe_train_per_class=200,
        probe_test_per_class=50,
    ),
    # Gemma-2-2B, layer 19, OpenWebText (the paper's setting) at a T4 budget. fp32: fp16 overflows
    # in Gemma-2 and the T4 has no fast bf16; the weights take 10.5 GB of the 16 GB, so model
    # batches stay small (the splice's 256k-way logits: 4 x 128 x 256k x 4 B = 0.5 GB per copy).
    # 1M cached tokens = 9.7 GB of disk (d = 2,304); one seed keeps the 8 runs in one session.
    "colab-gemma": Profile(
        name="colab-gemma",
        **_GEMMA,
        n_train_tokens=1_048_576,
        n_valid_tokens=32_768,
        model_batch_size=16,
        shard_tokens=32_768,
        train_steps=1000,
        seeds=(42,),
        log_every=20,
        checkpoint_every=250,
        n_eval_contexts=128,
        eval_batch_contexts=4,
        absorption_vocab_size=2000,
        probe_train_per_class=200,
        probe_test_per_class=50,
    ),
}


def get_profile(name: str = "local", **overrides) -> Profile:
    """Return the named profile, optionally with some fields overridden.

    Unknown names or fields raise a ValueError that lists the valid choices.
    """
    if name not in PROFILES:
        raise ValueError(
            f"Unknown profile {name!r}. Valid profiles: {', '.join(PROFILES)} "
            "(e.g. ./run_all.sh --profile local)."
        )
    profile = PROFILES[name]
    if overrides:
        valid = {f.name for f in dataclasses.fields(Profile)}
        unknown = sorted(set(overrides) - valid)
        if unknown:
            raise ValueError(
                f"Unknown profile field(s) {unknown}. Valid fields: {', '.join(sorted(valid))}."
            )
        profile = dataclasses.replace(profile, **overrides)
    return profile
