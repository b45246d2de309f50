"""Absorption against SAEBench 0.6.0's own calculator (evals/absorption/feature_absorption_calculator).

SAEBench's `FeatureAbsorptionCalculator.calculate_absorption` reads each word's residual through
`model.run_with_cache` at position -2 of its prompt and encodes it with a SAELens SAE. Here
`CachedWords` serves it our cached word activations (raw space) at that position, and the SAE is
our SAELens export, so both pipelines see identical inputs: what is compared is the per-word
absorption fraction and full-absorption flag, for a given probe and given main latents. (The
choice of main latents, by k-sparse probing, is tested in test_absorption.py; SAEBench runs its
own probe training with a different optimiser, so that part is not bit-comparable.)
"""

from __future__ import annotations

import pytest
import torch

from hsae_utils.evals import absorption as ab
from hsae_utils.method.checkpoint import save_sae
from hsae_utils.method.saes import ReLUSAE, ReLUSAEConfig

sae_lens = pytest.importorskip("sae_lens")
calc_mod = pytest.importorskip("sae_bench.evals.absorption.feature_absorption_calculator")

D, F, N, LAYER, SCALE = 16, 32, 200, 1, 0.5
HOOK = f"blocks.{LAYER}.hook_resid_post"


class CachedWords:
    """The two methods of a HookedTransformer that the calculator calls, over cached rows: the
    word's residual at the calculator's read position (-2), zeros elsewhere."""

    def __init__(self, words, x_raw_ND):
        self.row = {w: x for w, x in zip(words, x_raw_ND)}

    def to_tokens(self, text):
        return torch.zeros(1, 4, dtype=torch.long)  # every prompt "has the same length"

    def run_with_cache(self, texts, names_filter):
        acts = torch.zeros(len(texts), 4, D)
        for i, text in enumerate(texts):
            acts[i, -2] = self.row[text.split("\n")[-1].removesuffix(":")]
        return None, {names_filter[0]: acts}


def letter_sae_and_words(seed=0):
    """A ReLU SAE whose latent 0 is the probe direction, latents 1-3 lean on it (absorbers), the
    rest random; words mix the probe direction with the absorbers' and noise, so every branch of
    the rules occurs (main covers all, partial absorption, main silent, full absorption)."""
    g = torch.Generator().manual_seed(seed)
    probe_D = torch.nn.functional.normalize(torch.randn(D, generator=g), dim=0)
    W_dec = torch.nn.functional.normalize(torch.randn(F, D, generator=g), dim=-1)
    W_dec[0] = probe_D
    W_dec[1:4] = torch.nn.functional.normalize(probe_D + 0.6 * W_dec[1:4], dim=-1)
    sae = ReLUSAE(
        ReLUSAEConfig(
            d_in=D,
            d_sae=F,
            hook_name=HOOK,
            normalization={"scale": SCALE, "center": False, "mean": None},
        )
    )
    with torch.no_grad():
        sae.W_dec.copy_(W_dec)
        sae.W_enc.copy_(W_dec.T)
        sae.b_enc.fill_(-0.4)
    a = torch.rand(N, 1, generator=g) * 1.2
    b = torch.rand(N, 3, generator=g) * 1.5 * (torch.rand(N, 3, generator=g) < 0.4)
    x_norm_ND = a * probe_D + b @ W_dec[1:4] + 0.2 * torch.randn(N, D, generator=g)
    return sae.eval(), probe_D * 3.0, x_norm_ND  # the probe's norm must not matter


def test_absorption_matches_saebench_calculator(tmp_path):
    sae, probe_D, x_norm_ND = letter_sae_and_words()
    save_sae(sae, tmp_path)
    theirs = sae_lens.SAE.load_from_disk(tmp_path).eval()
    words = [f"w{i}" for i in range(N)]
    x_raw_ND = x_norm_ND / SCALE
    main = [0]
    calc = calc_mod.FeatureAbsorptionCalculator(
        model=CachedWords(words, x_raw_ND), icl_word_list=["a", "b"], batch_size=64
    )
    res = calc.calculate_absorption(theirs, words, probe_D, main, LAYER, show_progress=False)
    their_frac = torch.tensor(
        [r.absorption_fraction for r in res.word_results], dtype=torch.float64
    )
    their_full = torch.tensor([r.is_full_absorption for r in res.word_results])

    # ours: normalized space, as `evaluate_absorption` calls it
    with torch.no_grad():
        z_NF = sae.encode(x_norm_ND)
    unit = probe_D / probe_D.norm()
    cos_F = torch.nn.functional.normalize(sae.W_dec, dim=-1) @ unit
    frac, full = ab.absorption_for_letter(z_NF, x_norm_ND @ unit, cos_F, main)

    # every branch occurs on these words (else the comparison would prove little)
    assert (their_frac == 0).any() and (their_frac == 1).any()
    assert ((their_frac > 0) & (their_frac < 1)).any() and their_full.any() and not their_full.all()
    torch.testing.assert_close(frac.double(), their_frac, rtol=0, atol=1e-6)
    assert torch.equal(full, their_full)
