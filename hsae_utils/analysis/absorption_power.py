"""Does the word sample dominate the absorption verdict's minimum detectable effect?

The verdict compares the HierarchicalSAE with TopK on paired seeds; its MDE uses the spread of
the paired differences d_s over seeds. The absorption scores also depend on which n words the
first-letter task draws from the vocabulary (the same words for every SAE and seed), so

    d_s = mu + a_s + b + c_s      (seed, shared word effect, word x seed interaction)

and the seed spread the MDE uses is Var(a) + Var(c): the word x seed part c is word noise inside
the MDE; the shared part b shifts the mean difference, which no seed count removes and the MDE
does not see.

Half-sampling measures both without any further model work: each of J random halves of every
letter's train and test words reruns the per-word pipeline (ground-truth probe refitted,
k-sparse probing, scores). A half of n words drawn without replacement varies around the
n-word result with variance S^2 (2/n - 1/n) = S^2 / n: the n-word result's own word-sampling
variance (against an unlimited vocabulary; `fpc` scales it to a finite vocabulary of N words by
1 - n/N, and to other sizes by 1/n). The seeds x halves table of paired differences, read as a
two-way layout, gives the word x seed and shared variances; the verdict's observed seed spread
minus the first is the seeds' own.

Torch-free: works on the score tables `scripts/absorption_power.py` measures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.stats import chi2

from hsae_utils.analysis.stats import minimum_detectable_effect


def stratified_half(
    letters_train: np.ndarray, letters_test: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a random half (rounded up, so no letter loses its last word) of every
    letter's train words and of its test words, drawn without replacement."""
    out = []
    for letters in (np.asarray(letters_train), np.asarray(letters_test)):
        idx = []
        for c in np.unique(letters):
            pool = np.flatnonzero(letters == c)
            idx.append(rng.choice(pool, (len(pool) + 1) // 2, replace=False))
        out.append(np.sort(np.concatenate(idx)) if idx else np.array([], dtype=int))
    return out[0], out[1]


def variance_components(d_SJ: np.ndarray) -> dict[str, float]:
    """Two-way random-effects layout without replication (rows: seeds, columns: word
    subsamples), by the ANOVA mean squares; negative estimates are clipped to 0.

    Returns sigma2_seed, sigma2_word_shared, sigma2_word_seed and the mean difference."""
    d = np.asarray(d_SJ, float)
    S, J = d.shape
    if S < 2 or J < 2:
        raise ValueError(f"need >= 2 seeds and >= 2 word subsamples, got a {S} x {J} table")
    grand = d.mean()
    row, col = d.mean(1), d.mean(0)
    ms_seed = J * np.sum((row - grand) ** 2) / (S - 1)
    ms_word = S * np.sum((col - grand) ** 2) / (J - 1)
    resid = d - row[:, None] - col[None, :] + grand
    ms_res = np.sum(resid**2) / ((S - 1) * (J - 1))
    return {
        "mean_diff": float(grand),
        "sigma2_seed": float(max(0.0, (ms_seed - ms_res) / J)),
        "sigma2_word_shared": float(max(0.0, (ms_word - ms_res) / S)),
        "sigma2_word_seed": float(ms_res),
    }


def fpc_ratio(n: float, n_ref: float, n_full: float) -> float:
    """Word-sampling variance at n words over that at n_ref words: (1/n - 1/N) / (1/n_ref - 1/N)
    (letter-balanced draws without replacement from N words; 0 at n = N)."""
    if not 0 < n_ref < n_full:
        raise ValueError(f"need 0 < n_ref < n_full, got n_ref={n_ref}, n_full={n_full}")
    return max(0.0, (1 / min(n, n_full) - 1 / n_full) / (1 / n_ref - 1 / n_full))


def words_for_share(
    sigma2_seed: float, sigma2_word_ref: float, n_ref: float, n_full: float, share: float = 0.5
) -> float:
    """Smallest vocabulary size at which the word part of the seed spread,
    sigma2_word(n) / (sigma2_seed + sigma2_word(n)), falls to `share` (n_ref when it already
    has; the whole vocabulary n_full when only it gets there, e.g. sigma2_seed = 0)."""
    if sigma2_word_ref <= share / (1 - share) * sigma2_seed:
        return float(n_ref)
    if sigma2_seed <= 0:
        return float(n_full)
    # (1/n - 1/N) / (1/n_ref - 1/N) = target / sigma2_word_ref
    r = share / (1 - share) * sigma2_seed / sigma2_word_ref
    return float(1 / (r * (1 / n_ref - 1 / n_full) + 1 / n_full))


def decompose(
    d_actual_S: Sequence[float],
    d_half_SJ: np.ndarray,
    n_words: int,
    n_full: int,
    shares: Sequence[float] = (0.5, 0.2),
) -> dict[str, float]:
    """What of the verdict's uncertainty its n words make (of a vocabulary of n_full).

    d_actual_S: the verdict's paired differences (one per seed, on all n words); d_half_SJ: the
    same on J half-samples. Returns the seed spread the verdict's MDE uses (sd_seed_spread,
    mde_seed_spread), its word x seed part (sigma2_word_seed, word_share_of_mde_variance), the
    seeds' own part (sigma2_seed_only, mde_seeds_only: the MDE with no word noise), the standard
    error of the mean difference from the seeds (se_mean_diff_seed_spread) and from the words
    (se_mean_diff_words: shared part + word x seed part / seeds), and n_words_share_<s>: the
    vocabulary size at which the word part of the spread falls to s."""
    d_act = np.asarray(d_actual_S, float)
    S = len(d_act)
    half = np.asarray(d_half_SJ, float)
    if half.shape[0] != S:
        raise ValueError(f"the half-sample table has {half.shape[0]} seeds, the verdict {S}")
    vc = variance_components(half)
    fpc = 1 - n_words / n_full  # the words' variance against the finite vocabulary
    s2c, s2b = vc["sigma2_word_seed"] * fpc, vc["sigma2_word_shared"] * fpc
    spread = float(d_act.var(ddof=1))
    s2a = max(0.0, spread - s2c)
    out = {
        "n_words": n_words,
        "n_full": n_full,
        "n_seeds": S,
        "n_halves": half.shape[1],
        "mean_diff": float(d_act.mean()),
        "mean_diff_halves": vc["mean_diff"],
        "sd_seed_spread": math.sqrt(spread),
        "sigma2_seed_only": s2a,
        "sigma2_word_seed": s2c,
        "sigma2_word_shared": s2b,
        "word_share_of_mde_variance": min(1.0, s2c / spread) if spread > 0 else math.nan,
        "mde_seed_spread": minimum_detectable_effect(math.sqrt(spread), S),
        "mde_seeds_only": minimum_detectable_effect(math.sqrt(s2a), S),
        "se_mean_diff_seed_spread": math.sqrt(spread / S),
        "se_mean_diff_words": math.sqrt(s2b + s2c / S),
    }
    # the word x seed variance is known to its chi-square interval ((S - 1)(J - 1) df): the
    # share of the verdict's observed spread at its ends (the spread's own uncertainty, S - 1
    # df, is the seed count's problem, not the words')
    if spread > 0:
        df_c = (S - 1) * (half.shape[1] - 1)
        out["word_share_low"] = min(1.0, s2c * df_c / chi2.ppf(0.975, df_c) / spread)
        out["word_share_high"] = min(1.0, s2c * df_c / chi2.ppf(0.025, df_c) / spread)
    for share in shares:
        out[f"n_words_share_{share:g}"] = words_for_share(s2a, s2c, n_words, n_full, share)
    return out
