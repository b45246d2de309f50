"""`model_dtype="bfloat16"` through the paper's path on the `paper-tiny` replicas (the tiny
Gemma-2, OpenWebText and SAEBench's probing datasets): caching, training inputs, the splice,
absorption and probing all run on the bf16 model, and give finite numbers."""

import dataclasses
import math
import os

import pytest
import torch

import hsae_utils as hs
from hsae_utils.config import REPO_ROOT, get_profile
from hsae_utils.data import dataset_replicas, hub
from hsae_utils.data.forward import model_dtype
from hsae_utils.data.model import load_model
from hsae_utils.data.tiny_gemma import ensure_replica

CORPUS = REPO_ROOT / "outputs" / "corpus"


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    if not (CORPUS / "train.jsonl").is_file():
        pytest.skip("needs the embedded corpus (python -m hsae_utils.pipeline.prepare)")
    root = tmp_path_factory.mktemp("paper_tiny")
    (root / "outputs").mkdir()
    os.symlink(CORPUS, root / "outputs" / "corpus")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HSAE_CACHE_DIR", str(root / "cache"))
        mp.setenv("HSAE_OUTPUT_ROOT", str(root / "outputs"))
        mp.delenv(hub.REPLICA_ENV, raising=False)
        ensure_replica(CORPUS)
        dataset_replicas.ensure_dataset_replicas(CORPUS)
        yield root


def _run(dtype: str):
    P = dataclasses.replace(
        get_profile("paper-tiny"),
        name=f"paper-tiny-{dtype}",
        model_dtype=dtype,
        n_train_tokens=2048,
        n_valid_tokens=1024,
        n_norm_tokens=1024,
        shard_tokens=1024,
        train_steps=10,
        train_batch_size=256,
        log_every=5,
        checkpoint_every=10,
        n_eval_contexts=4,
        eval_batch_contexts=2,
        probe_train_per_class=4,
        probe_test_per_class=2,
        probe_max_tokens=32,
        absorption_vocab_size=104,
    )
    model = load_model(P, device="cpu")
    assert model_dtype(model) == getattr(torch, dtype)
    hs.cache_activations(P, model=model)
    trained = hs.train_sae(P, "topk", seed=42, progress=False)
    result = hs.evaluate_saes(P, [trained], progress=False, model=model)
    return result.results.set_index("metric")["value"]


def test_bfloat16_runs_the_paper_path(roots):
    bf16 = _run("bfloat16")
    for metric in (
        "ce_loss_without_sae",
        "ce_loss_with_sae",
        "kl_div_with_sae",
        "kl_div_with_ablation",
        "explained_variance_legacy",
        "llm_top_1_test_accuracy",
        "sae_top_1_test_accuracy",
    ):
        assert math.isfinite(bf16[metric]), metric
    # a random tiny Gemma-2 with a final soft-cap of 3: the clean CE is near log(vocab) = 8.3
    assert 5 < bf16["ce_loss_without_sae"] < 12
    assert bf16["probing_n_datasets"] == 8
    assert any(m.startswith("absorption_fraction:") for m in bf16.index)


def test_forward_dtype_is_bf16_only_for_gemma_on_a_bf16_card():
    from hsae_utils.data.model import forward_dtype

    paper, local = get_profile("paper"), get_profile("local")
    assert forward_dtype(paper, "cuda", bf16_supported=True) == torch.bfloat16
    assert forward_dtype(paper, "cuda:0", bf16_supported=False) == torch.float32  # a T4
    assert forward_dtype(paper, "cpu") == torch.float32  # CPU stays fp32
    assert forward_dtype(get_profile("paper-tiny"), "cuda", bf16_supported=True) == torch.bfloat16
    assert forward_dtype(local, "cuda", bf16_supported=True) == torch.float32  # SmolLM2: fp32


# The bf16 forward against fp32 on the tiny Gemma-2 at paper-tiny's hook (stated tolerances):
# per-token residual relative error <= 5 % (bf16's 2^-8 rounding, compounding ~0.5 % per layer),
# mean next-token CE within 0.5 %, KL(fp32 || bf16) of the next-token distribution < 1e-3 nats.
BF16_RESID_RTOL, BF16_CE_RTOL, BF16_KL_MAX = 0.05, 0.005, 1e-3


def test_bf16_forward_matches_fp32_within_the_stated_tolerance(tiny_gemma_dir):
    from hsae_utils.data.forward import layer_resid, logits_from_layer

    from .conftest import GEMMA_VOCAB, boot

    layer = get_profile("paper-tiny").layer
    m32, m16 = boot(tiny_gemma_dir), boot(tiny_gemma_dir, torch.bfloat16)
    toks = torch.randint(3, GEMMA_VOCAB, (4, 24), generator=torch.Generator().manual_seed(0))
    r32, r16 = layer_resid(m32, toks, layer), layer_resid(m16, toks, layer)
    assert r16.dtype == torch.float32  # residuals leave the model in fp32 (fp32 SAE maths)
    rel = (r16 - r32).norm(dim=-1) / r32.norm(dim=-1)
    assert 0 < rel.max() <= BF16_RESID_RTOL
    lp32 = logits_from_layer(m32, r32, layer).float().log_softmax(-1)
    lp16 = logits_from_layer(m16, r16.to(torch.bfloat16), layer).float().log_softmax(-1)
    target = toks[:, 1:]
    ce32 = -lp32[:, :-1].gather(-1, target[..., None]).mean()
    ce16 = -lp16[:, :-1].gather(-1, target[..., None]).mean()
    assert abs(ce16 - ce32) <= BF16_CE_RTOL * ce32
    assert (lp32.exp() * (lp32 - lp16)).sum(-1).mean() < BF16_KL_MAX
