"""The probes' logistic regression in torch (hsae_utils.evals.logreg) against scikit-learn's
LogisticRegression, and the absorption and probing code paths run with it (forced on the CPU)
against their sklearn paths.

Stated tolerances (fp64 Newton to a scaled gradient of 1e-8; sklearn's lbfgs stops at 1e-4, and
the evaluation hands it float32 arrays, which it fits in float32):
- against sklearn run to a tight tolerance on float64 (tol 1e-12): coefficients and intercept
  within SKLEARN_TIGHT_RTOL of the largest |coefficient|; predictions, F1 and accuracy on
  held-out rows identical;
- against sklearn as the CPU evaluation runs it (defaults, float32): within
  SKLEARN_DEFAULT_RTOL (sklearn's own stopping and float32 error: measured up to 2.2e-3 on
  these fixtures); predictions identical except rows whose score lies within sklearn's stopping
  error of 0 (1 row of 600 in one case here), so F1 / accuracy differ by at most those rows;
- batched against one by one: within BATCH_ATOL (only the products' reduction order differs);
- the evaluations' scores (absorption fraction, full absorption, probing accuracies) with the
  torch fits equal the sklearn path's within SCORE_ATOL, the main latents identical.
"""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score

from hsae_utils.evals import absorption as ab
from hsae_utils.evals import logreg
from hsae_utils.evals import probing as pr
from hsae_utils.evals.adapter import SAEAdapter

SKLEARN_DEFAULT_RTOL = 5e-3
SKLEARN_TIGHT_RTOL = 1e-6
BATCH_ATOL = 1e-10
SCORE_ATOL = 1e-12


def sparse_latents(n, p, seed, signal=0.8, pos_frac=0.2):
    """SAE-like inputs: non-negative, mostly zero, heavy-tailed, weakly informative features
    (the classes overlap, so the optimum is finite and margins spread out), imbalanced labels."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < pos_frac).astype(int)
    pre = rng.standard_t(3, size=(n, p)) - 1.0 + signal * y[:, None] * rng.random(p)
    return np.maximum(pre, 0).astype(np.float32), y


def dense_features(n, p, seed):
    """Pooled-feature-like inputs: dense, correlated, balanced classes."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n // 2, int), np.zeros(n - n // 2, int)]
    A = rng.normal(size=(p, p)) / np.sqrt(p)
    x = rng.normal(size=(n, p)) @ A + 0.4 * y[:, None] * rng.normal(size=p)
    return (3 * x).astype(np.float32), y


CASES = {
    "sparse_balanced_k1": (lambda s: sparse_latents(800, 1, s), True),
    "sparse_balanced_k10": (lambda s: sparse_latents(1500, 10, s), True),
    "dense_k20": (lambda s: dense_features(600, 20, s), False),
    "dense_k5": (lambda s: dense_features(300, 5, s), False),
}


def sk_fit(X, y, balanced, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LogisticRegression(class_weight="balanced" if balanced else None, **kw).fit(X, y)


def torch_fit(X, y, balanced):
    return logreg.fit_logreg(
        torch.from_numpy(X)[None], torch.from_numpy(y)[None], balanced=balanced
    )


@pytest.mark.parametrize("case", CASES)
def test_fit_matches_sklearn(case):
    make, balanced = CASES[case]
    X, y = make(0)
    X_te, y_te = make(1)
    fit = torch_fit(X, y, balanced)
    assert bool(fit.converged.all())
    ours = np.r_[fit.coef[0].numpy(), fit.intercept[0].item()]
    # the CPU evaluation's settings: absorption max_iter 500, probing 1,000 (no effect: both stop
    # on tol first), float32 arrays
    default = sk_fit(X, y, balanced, max_iter=1000)
    tight = sk_fit(X.astype(np.float64), y, balanced, max_iter=100_000, tol=1e-12)
    for clf, rtol in ((default, SKLEARN_DEFAULT_RTOL), (tight, SKLEARN_TIGHT_RTOL)):
        theirs = np.r_[clf.coef_[0], clf.intercept_[0]]
        assert np.abs(ours - theirs).max() <= rtol * np.abs(theirs).max(), (case, ours, theirs)
    scores = fit.decision_function(torch.from_numpy(X_te)[None])[0].numpy()
    pred = (scores > 0).astype(int)
    ref = tight.predict(X_te.astype(np.float64))
    np.testing.assert_array_equal(pred, ref)
    assert f1_score(y_te, pred) == f1_score(y_te, ref)
    assert accuracy_score(y_te, pred) == accuracy_score(y_te, ref)
    # sklearn as the evaluation runs it: a prediction differs only where the score is within
    # sklearn's stopping error of 0
    sk_scores = default.decision_function(X_te)
    differ = (scores > 0) != (sk_scores > 0)
    assert differ.mean() <= 0.002
    assert (np.abs(scores[differ]) <= np.abs(scores - sk_scores).max()).all()
    f1_torch = logreg.f1_scores(torch.from_numpy(pred)[None], torch.from_numpy(y_te)[None])
    assert f1_torch.item() == pytest.approx(f1_score(y_te, pred), abs=1e-15)


def test_the_optimum_zeroes_sklearns_gradient():
    """Independent check of the objective: numpy's gradient of C sum s_i loss_i + ||w||^2 / 2,
    written out here, vanishes at the fitted parameters (balanced weights, intercept free)."""
    X, y = sparse_latents(1000, 6, seed=3)
    fit = torch_fit(X, y, balanced=True)
    w, b = fit.coef[0].numpy(), fit.intercept[0].item()
    s = np.where(y == 1, len(y) / (2 * y.sum()), len(y) / (2 * (len(y) - y.sum())))
    r = s * (1 / (1 + np.exp(-(X.astype(np.float64) @ w + b))) - y)
    grad = np.r_[X.T @ r + w, r.sum()] / s.sum()
    assert np.abs(grad).max() < 1e-8


def test_batched_equals_one_by_one_with_padding():
    problems = [sparse_latents(n, 4, seed) for seed, n in enumerate((300, 520, 410, 90))]
    problems += [dense_features(n, 4, seed) for seed, n in enumerate((200, 333))]
    X, mask = logreg.stack_padded([torch.from_numpy(x) for x, _ in problems])
    Y, _ = logreg.stack_padded([torch.from_numpy(y) for _, y in problems])
    for balanced in (False, True):
        batched = logreg.fit_logreg(X, Y, mask, balanced=balanced)
        for i, (x, y) in enumerate(problems):
            alone = torch_fit(x, y, balanced)
            torch.testing.assert_close(batched.coef[i], alone.coef[0], atol=BATCH_ATOL, rtol=0)
            torch.testing.assert_close(
                batched.intercept[i], alone.intercept[0], atol=BATCH_ATOL, rtol=0
            )
        # a problem stops on its own: its iterations do not depend on the batch
        assert [int(n) for n in batched.n_iter] == [
            int(torch_fit(x, y, balanced).n_iter[0]) for x, y in problems
        ]


def test_bad_input_is_refused_with_the_fix():
    x = torch.rand(2, 10, 3)
    with pytest.raises(ValueError, match="only one class"):
        logreg.fit_logreg(x, torch.zeros(2, 10))
    with pytest.raises(ValueError, match="stack the problems"):
        logreg.fit_logreg(x[0], torch.zeros(10))
    with pytest.raises(ValueError, match="probe_fit must be"):
        logreg.resolve_probe_fit("cuda", "cpu")
    assert logreg.resolve_probe_fit("auto", "cpu") == "sklearn"
    assert logreg.resolve_probe_fit("auto", "cuda:0") == "torch"
    assert logreg.resolve_probe_fit("torch", "cpu") == "torch"


# ------------------------------------------------------------------- the evaluations' paths
class RandomReLUSAE(torch.nn.Module):
    """A random ReLU SAE (unit decoder rows, tied encoder, a threshold): many latents carry a
    little of several letters, so the k-sparse rule accepts and stops at varied k."""

    def __init__(self, d=32, F=96, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        W = torch.nn.functional.normalize(torch.randn(F, d, generator=g), dim=-1)
        self.W_dec = torch.nn.Parameter(W)
        self.cfg = SimpleNamespace(normalization={"scale": 1.0, "center": False, "mean": None})

    def encode(self, x):
        return torch.relu(x @ self.W_dec.T - 0.8)

    def decode(self, z):
        return z @ self.W_dec


def noisy_letters(n_per_letter, rng, d=32):
    directions = np.random.default_rng(7).normal(size=(26, d))
    y = np.repeat(np.arange(26), n_per_letter)
    x = rng.normal(size=(len(y), d)) + 1.6 * directions[y]
    return x.astype(np.float32), y


def test_absorption_with_torch_fits_equals_the_sklearn_path():
    rng = np.random.default_rng(0)
    x_tr, y_tr = noisy_letters(30, rng)
    x_te, y_te = noisy_letters(12, rng)
    data = ab.AbsorptionData.from_arrays(x_tr, y_tr, x_te, y_te, min_letters=20)
    adapter = SAEAdapter(RandomReLUSAE())
    sk_summary, sk_rows = ab.evaluate_absorption(adapter, data, seed=0, probe_fit="sklearn")
    th_summary, th_rows = ab.evaluate_absorption(adapter, data, seed=0, probe_fit="torch")
    assert len({r["num_split_features"] for r in sk_rows}) > 1  # the rule stops at varied k
    assert [r["main_latents"] for r in th_rows] == [r["main_latents"] for r in sk_rows]
    for a, b in zip(th_rows, sk_rows):
        for k, v in b.items():
            if isinstance(v, float) and not np.isnan(v):
                assert a[k] == pytest.approx(v, abs=SCORE_ATOL), (b["letter"], k)
    for k, v in sk_summary.items():
        assert th_summary[k] == pytest.approx(v, abs=SCORE_ATOL, nan_ok=True), k


def test_sparse_probing_with_torch_fits_equals_the_sklearn_path():
    from .test_probing import DimSAE, synthetic_probing_data

    data = synthetic_probing_data(n_per_class=60, n_classes=4, d=24, seed=1)
    # weaken the planted features so the top-k probes are not all perfect
    acts = data.acts_TD.numpy().copy()
    acts += np.random.default_rng(2).normal(scale=4.0, size=acts.shape).astype(np.float32)
    data.acts_TD = torch.from_numpy(acts)
    adapter = SAEAdapter(DimSAE(24))
    sk, sk_rows = pr.evaluate_sparse_probing(adapter, data, (1, 5, 20), probe_fit="sklearn")
    th, th_rows = pr.evaluate_sparse_probing(adapter, data, (1, 5, 20), probe_fit="torch")
    assert 0.5 < sk["sae_top_1_test_accuracy"] < 1.0  # not trivial
    assert th.keys() == sk.keys()
    for k in sk:
        assert th[k] == pytest.approx(sk[k], abs=SCORE_ATOL), k
    assert th_rows == sk_rows
