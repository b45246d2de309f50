"""Absorption is a property of what an SAE computes, not of how its latents are scaled (issue 14,
item 1): rescaling latent i by c_i and its decoder row by 1 / c_i leaves every absorption number
unchanged, and an external SAELens SAE (decoder rows of norm s in our normalized space) scores
the same as the same SAE loaded as ours. SAEBench gets this by folding decoder norms into the
latents (`fold_W_dec_norm`) before its absorption eval."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hsae_utils import evals as ev
from hsae_utils.evals import absorption as ab
from hsae_utils.method.checkpoint import save_sae
from hsae_utils.method.saes import ReLUSAE, ReLUSAEConfig

from .test_absorption import synthetic_letters

D, F, SCALE = 32, 64, 0.5  # powers of two: rescaling is exact in float32


def letters_data():
    rng = np.random.default_rng(0)
    x_tr, y_tr = synthetic_letters(12, rng)
    x_te, y_te = synthetic_letters(6, rng, marked_b=3)
    return ab.AbsorptionData.from_arrays(x_tr / SCALE, y_tr, x_te / SCALE, y_te, min_letters=5)


def relu_sae() -> ReLUSAE:
    """Latents 0..25 near the letter directions, the rest random; some absorption occurs."""
    g = torch.Generator().manual_seed(0)
    W_dec = torch.randn(F, D, generator=g)
    W_dec[:26, :26] += 6 * torch.eye(26)
    W_dec[40:44, 1] += 4.0  # latents that lean on letter "b"
    W_dec = torch.nn.functional.normalize(W_dec, dim=-1)
    sae = ReLUSAE(
        ReLUSAEConfig(
            d_in=D, d_sae=F, normalization={"scale": SCALE, "center": False, "mean": None}
        )
    )
    with torch.no_grad():
        sae.W_dec.copy_(W_dec)
        sae.W_enc.copy_(W_dec.T)
        sae.b_enc.fill_(-1.0)
    return sae.eval()


def rescaled(sae: ReLUSAE, c_F: torch.Tensor) -> ReLUSAE:
    out = ReLUSAE(sae.cfg)
    with torch.no_grad():
        out.W_enc.copy_(sae.W_enc * c_F)
        out.b_enc.copy_(sae.b_enc * c_F)
        out.W_dec.copy_(sae.W_dec / c_F[:, None])
        out.b_dec.copy_(sae.b_dec)
    return out.eval()


def summary(adapter, data):
    return ab.evaluate_absorption(adapter, data, seed=0, max_k=2)[0]


def assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == pytest.approx(b[k], rel=1e-6, abs=1e-9, nan_ok=True), k


def test_rescaling_latents_leaves_absorption_unchanged():
    data, sae = letters_data(), relu_sae()
    c_F = 2.0 ** torch.randint(-3, 4, (F,), generator=torch.Generator().manual_seed(1)).float()
    base = summary(ev.SAEAdapter(sae), data)
    assert base["absorption_n_letters"] >= 5 and base["mean_absorption_fraction_score"] > 0
    assert_same(summary(ev.SAEAdapter(rescaled(sae, c_F)), data), base)


def test_external_sae_lens_sae_scores_like_our_load(tmp_path):
    """Our export read by SAELens has unit rows in raw space, so rows of norm s in our normalized
    space (and latents z / s); the absorption must not see the difference."""
    pytest.importorskip("sae_lens")
    from hsae_utils.evals import external

    data, sae = letters_data(), relu_sae()
    save_sae(sae, tmp_path)
    ext = external.load_external_adapter(str(tmp_path), normalization=sae.cfg.normalization)
    assert_same(
        summary(ext, data),
        summary(ev.load_adapter(ev.SAERun("o", "o", 0, "o", "relu", tmp_path)), data),
    )
