"""Core metrics against the field's code: SAELens' `evals` functions, run on the same tiny model,
tokens and exported SAE, give our reconstruction, sparsity and splice (KL / CE) metrics.

SAELens' functions take an activation store only for `get_batch_tokens`; `Tokens` hands them the
same contexts our splice set uses. The SAE they see is our SAELens export (raw space)."""

from __future__ import annotations

import pytest
import torch

from hsae_utils import evals as ev
from hsae_utils.method.checkpoint import save_sae
from hsae_utils.method.saes import TopKSAE, TopKSAEConfig

from .conftest import TINY_D

sae_lens = pytest.importorskip("sae_lens")
from sae_lens import evals as sl_evals  # noqa: E402
from sae_lens.training.activation_scaler import ActivationScaler  # noqa: E402

LAYER = 1
HOOK = f"blocks.{LAYER}.hook_resid_post"
SPECIAL = [0, 1]  # BOS / boundary and <unk> of the tiny tokenizer
SCALE = 0.5


class Tokens:
    """The one method of an activation store that SAELens' eval functions call."""

    def __init__(self, tokens_NS):
        self.tokens_NS = tokens_NS

    def get_batch_tokens(self, n):
        assert n == self.tokens_NS.shape[0]
        return self.tokens_NS


def contexts(n=6, s=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    toks = torch.randint(2, 40, (n, s), generator=g)
    toks[:, 0] = 0  # BOS
    toks[1, 7] = 0  # a document boundary
    toks[2, 3] = 1  # an <unk>
    return toks


@pytest.fixture(scope="module")
def setup(tiny_model, tmp_path_factory):
    """Our adapter and SAELens' SAE of one export, and our splice set on the same contexts."""
    folder = tmp_path_factory.mktemp("sae")
    sae = TopKSAE(
        TopKSAEConfig(
            d_in=TINY_D,
            d_sae=64,
            k=6,
            hook_name=HOOK,
            normalization={"scale": SCALE, "center": False, "mean": None},
        )
    )
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
        sae.b_dec.normal_(0, 0.1, generator=torch.Generator().manual_seed(2))
    save_sae(sae.eval(), folder)
    ours = ev.load_adapter(ev.SAERun("t", "t", 0, "t", "topk", folder))
    theirs = sae_lens.SAE.load_from_disk(folder).eval()
    toks = contexts()
    splice = ev.build_splice_data(tiny_model, toks, LAYER, SPECIAL, progress=False)
    return ours, theirs, toks, splice


def test_reconstruction_metrics_match_sae_lens(tiny_model, setup):
    ours, theirs, toks, splice = setup
    x_raw = splice.resid_NSD[splice.keep_NS]
    mine = ev.reconstruction_metrics(ours, x_raw)
    with torch.no_grad():
        their, _ = sl_evals.get_sparsity_and_variance_metrics(
            theirs,
            tiny_model,
            Tokens(toks),
            ActivationScaler(),
            n_batches=1,
            compute_l2_norms=True,
            compute_sparsity_metrics=True,
            compute_variance_metrics=True,
            compute_featurewise_density_statistics=False,
            eval_batch_size_prompts=len(toks),
            model_kwargs={},
            ignore_tokens=SPECIAL,
        )
    assert 0 < mine["l0"] <= 6
    for name, our_name in [
        ("l0", "l0"),
        ("explained_variance_legacy", "explained_variance_legacy"),
        ("explained_variance", "explained_variance"),
        ("mse", "mse_raw"),
        ("cossim", "cossim"),
        ("l2_ratio", "l2_ratio"),
        ("relative_reconstruction_bias", "relative_reconstruction_bias"),
    ]:
        assert mine[our_name] == pytest.approx(their[name], rel=1e-5, abs=1e-6), name
    assert mine["l1"] == pytest.approx(their["l1"] * SCALE, rel=1e-5)  # our latents: normalized


def test_mse_is_saebenchs(setup):
    """SAEBench core/main.py: mse = resid_sum_of_squares / flattened_mask.sum() per token, then
    the mean over tokens; one evaluation batch here (all rows), so sse_t / n averaged."""
    ours, _, _, splice = setup
    x_raw = splice.resid_NSD[splice.keep_NS]
    xhat, *_ = ours.reconstruct(x_raw)
    sse_t = (x_raw - xhat).double().pow(2).sum(-1)
    expected = (sse_t / x_raw.shape[0]).mean().item()
    got = ev.reconstruction_metrics(ours, x_raw, saebench_batch_tokens=x_raw.shape[0])
    assert got["mse"] == pytest.approx(expected, rel=1e-6)
    assert got["mse_raw"] == pytest.approx(sse_t.mean().item(), rel=1e-6)
    # two batches of sizes n1, n2: each token divided by its own batch's count
    n1 = x_raw.shape[0] // 2 + 3
    got2 = ev.reconstruction_metrics(ours, x_raw, saebench_batch_tokens=n1)
    n2 = x_raw.shape[0] - n1
    expected2 = torch.cat([sse_t[:n1] / n1, sse_t[n1:] / n2]).mean().item()
    assert got2["mse"] == pytest.approx(expected2, rel=1e-6)


def test_splice_with_sae_matches_sae_lens(tiny_model, setup):
    """KL and CE with the SAE spliced in at non-special positions, averaged over those."""
    ours, theirs, toks, splice = setup
    mine = ev.splice_metrics(tiny_model, splice, {"t": ours}, LAYER, progress=False)["t"]
    with torch.no_grad():
        their = sl_evals.get_downstream_reconstruction_metrics(
            theirs,
            tiny_model,
            Tokens(toks),
            ActivationScaler(),
            compute_kl=True,
            compute_ce_loss=True,
            n_batches=1,
            eval_batch_size_prompts=len(toks),
            ignore_tokens=SPECIAL,
        )
    for name in ("kl_div_with_sae", "ce_loss_with_sae", "ce_loss_without_sae"):
        assert mine[name] == pytest.approx(their[name], rel=1e-4, abs=1e-6), name


def test_zero_ablation_baselines_match_sae_lens(tiny_model, setup):
    """SAELens and SAEBench zero every position of the hook, BOS included; the denominators of
    the KL score and the CE loss score must be theirs."""
    ours, theirs, toks, splice = setup
    mine = ev.splice_metrics(tiny_model, splice, {"t": ours}, LAYER, progress=False)["t"]
    with torch.no_grad():
        their = sl_evals.get_downstream_reconstruction_metrics(
            theirs,
            tiny_model,
            Tokens(toks),
            ActivationScaler(),
            compute_kl=True,
            compute_ce_loss=True,
            n_batches=1,
            eval_batch_size_prompts=len(toks),
            ignore_tokens=SPECIAL,
        )
    for name in ("kl_div_with_ablation", "ce_loss_with_ablation", "kl_div_score", "ce_loss_score"):
        assert mine[name] == pytest.approx(their[name], rel=1e-4, abs=1e-6), name
