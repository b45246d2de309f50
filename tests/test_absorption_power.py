"""The word-sample decomposition of the absorption verdict (analysis/absorption_power.py),
against analytic values: the sampling variance of a letter-balanced mean without replacement,
known variance components, the verdict's own MDE."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hsae_utils.analysis.absorption_power import (
    decompose,
    fpc_ratio,
    stratified_half,
    variance_components,
    words_for_share,
)
from hsae_utils.analysis.stats import minimum_detectable_effect


def test_half_sample_takes_half_of_every_letter_in_each_split():
    rng = np.random.default_rng(0)
    tr = np.repeat(np.arange(26), np.arange(26) + 1)  # 1 ... 26 train words a letter
    te = np.repeat(np.arange(26), 3)
    a, b = stratified_half(tr, te, rng)
    assert np.array_equal(np.bincount(tr[a], minlength=26), (np.arange(26) + 2) // 2)
    assert np.array_equal(np.bincount(te[b], minlength=26), np.full(26, 2))  # rounded up
    assert len(set(a)) == len(a) and len(set(b)) == len(b)  # without replacement
    assert set(a) <= set(range(len(tr))) and set(b) <= set(range(len(te)))


def test_half_sample_variance_is_the_full_samples_word_variance():
    # score = mean over letters of the mean of a letter's test words (as the absorption scores
    # are). A half drawn without replacement from n words varies around the n-word score with
    # variance sum_c (1/(n_c/2) - 1/n_c) S_c^2 / 26^2 = sum_c S_c^2 / n_c / 26^2: the n-word
    # score's own variance over draws of its words from an unlimited vocabulary.
    rng = np.random.default_rng(1)
    n_c = 20
    te = np.repeat(np.arange(26), n_c)
    values = rng.gamma(2.0, 1.0 + te / 10)  # per test word, letter-dependent spread
    S2 = np.array([values[te == c].var(ddof=1) for c in range(26)])
    analytic = np.sum(S2 / n_c) / 26**2
    scores = []
    for _ in range(4000):
        _, half = stratified_half(te[:0], te, rng)
        scores.append((np.bincount(te[half], values[half]) / np.bincount(te[half])).mean())
    assert np.var(scores, ddof=1) == pytest.approx(analytic, rel=0.1)
    # and, drawn from an unlimited vocabulary, the n-word score has that variance too
    fresh = [(np.bincount(te, rng.gamma(2.0, 1.0 + te / 10)) / n_c).mean() for _ in range(4000)]
    truth = np.sum(2.0 * (1.0 + np.arange(26) / 10) ** 2 / n_c) / 26**2  # gamma var k theta^2
    assert np.var(fresh, ddof=1) == pytest.approx(truth, rel=0.1)
    assert analytic == pytest.approx(truth, rel=0.25)  # S_c^2 of 20 words estimates it


def test_fpc_ratio():
    N = 26 * 100
    assert fpc_ratio(26 * 20, 26 * 50, N) == pytest.approx((1 / 20 - 1 / 100) / (1 / 50 - 1 / 100))
    assert fpc_ratio(N, 26 * 50, N) == 0.0
    with pytest.raises(ValueError, match="0 < n_ref < n_full"):
        fpc_ratio(10, N, N)


def test_variance_components_recover_known_sigmas():
    rng = np.random.default_rng(2)
    S, J = 400, 400
    a, b, c = 1.0, 0.5, 0.3
    d = 0.7 + rng.normal(0, a, (S, 1)) + rng.normal(0, b, (1, J)) + rng.normal(0, c, (S, J))
    vc = variance_components(d)
    assert vc["sigma2_seed"] == pytest.approx(a**2, rel=0.2)
    assert vc["sigma2_word_shared"] == pytest.approx(b**2, rel=0.2)
    assert vc["sigma2_word_seed"] == pytest.approx(c**2, rel=0.05)
    # an additive table (no word x seed term) has none
    additive = rng.normal(size=(3, 1)) + rng.normal(size=(1, 20))
    assert variance_components(additive)["sigma2_word_seed"] == pytest.approx(0, abs=1e-12)
    with pytest.raises(ValueError, match=">= 2 seeds and >= 2 word subsamples"):
        variance_components(np.ones((1, 5)))


def test_decompose_without_word_noise_is_the_verdicts_mde():
    # halves that repeat the verdict's differences: no word share, the MDE is the paired test's
    d_actual = np.array([-0.07, -0.12, -0.11])
    halves = np.repeat(d_actual[:, None], 10, axis=1)
    out = decompose(d_actual, halves, 5200, 47078)
    assert out["word_share_of_mde_variance"] == pytest.approx(0, abs=1e-12)
    assert out["se_mean_diff_words"] == pytest.approx(0, abs=1e-12)
    assert out["mde_seed_spread"] == pytest.approx(
        minimum_detectable_effect(d_actual.std(ddof=1), 3), rel=1e-9
    )
    assert out["mde_seeds_only"] == pytest.approx(out["mde_seed_spread"], rel=1e-9)
    assert out["n_words_share_0.5"] == 5200  # the size measured already meets it


def test_decompose_reads_word_noise_from_the_halves():
    # word x seed noise of known variance in the halves (around the verdict's differences):
    # recovered (times the finite-vocabulary factor), and taken out of the seeds' own part
    rng = np.random.default_rng(3)
    d_actual = np.array([-0.07, -0.12, -0.11])
    c = 0.02
    halves = d_actual[:, None] + rng.normal(0, c, (3, 400))
    out = decompose(d_actual, halves, 5200, 52000)
    assert out["sigma2_word_seed"] == pytest.approx(c**2 * 0.9, rel=0.1)
    assert out["sigma2_seed_only"] == pytest.approx(
        d_actual.var(ddof=1) - out["sigma2_word_seed"], rel=1e-9
    )
    assert out["word_share_of_mde_variance"] == pytest.approx(
        out["sigma2_word_seed"] / d_actual.var(ddof=1), rel=1e-9
    )
    assert out["word_share_low"] < out["word_share_of_mde_variance"] < out["word_share_high"]
    with pytest.raises(ValueError, match="2 seeds, the verdict 3"):
        decompose(np.zeros(3), np.zeros((2, 4)), 5200, 52000)


def test_words_for_share_reaches_the_share():
    s2a, s2c, n_ref, N = 1.0, 3.0, 5200, 47078
    for share in (0.5, 0.2):
        n = words_for_share(s2a, s2c, n_ref, N, share)
        w = s2c * fpc_ratio(n, n_ref, N)
        assert w / (s2a + w) == pytest.approx(share, rel=1e-9)
        assert n_ref < n < N
    assert words_for_share(1.0, 0.5, n_ref, N) == n_ref  # already below half
    assert words_for_share(0.0, 0.5, n_ref, N) == N  # only the whole vocabulary removes it
    assert math.isnan(
        decompose(np.zeros(3), np.zeros((3, 4)), n_ref, N)["word_share_of_mde_variance"]
    )
