"""Sparse probing against SAEBench 0.6.0's own functions (evals/sparse_probing/probe_training.py,
sae_bench_utils/activation_collection.py) on identical inputs: mean pooling of the residual and
of the SAE latents over each text's tokens, top-k latent selection by mean difference, and the
scikit-learn probe's test accuracy.

Where we differ on purpose: SAEBench draws the negatives of a one-vs-rest task with torch's global
RNG (`prepare_probe_data`); ours are a seeded numpy draw of the same size (`binary_task`), so the
draw is shared here rather than compared."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hsae_utils.evals import probing as pr
from hsae_utils.method.checkpoint import save_sae
from hsae_utils.method.saes import ReLUSAE, ReLUSAEConfig

sae_lens = pytest.importorskip("sae_lens")
ac = pytest.importorskip("sae_bench.sae_bench_utils.activation_collection")
pt = pytest.importorskip("sae_bench.evals.sparse_probing.probe_training")

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # sklearn, in SAEBench's probe

D, F, L, SCALE = 12, 40, 9, 0.5


def texts(n=60, seed=0):
    """Token residuals of n texts of 3..L tokens, two classes differing along one direction;
    as SAEBench stores them ([n, L, D], zeros after each text) and as we do (rows + offsets)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, L + 1, (n,), generator=g)
    labels = torch.arange(n) % 2
    direction = torch.nn.functional.normalize(torch.randn(D, generator=g), dim=0)
    padded = torch.zeros(n, L, D)
    for i, n_tok in enumerate(lengths.tolist()):
        padded[i, :n_tok] = torch.randn(n_tok, D, generator=g) + 0.8 * labels[i] * direction + 0.5
    rows = torch.cat([padded[i, :m] for i, m in enumerate(lengths.tolist())])
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    return padded, rows, offsets, labels.numpy()


@pytest.fixture(scope="module")
def sae_pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sae")
    sae = ReLUSAE(
        ReLUSAEConfig(
            d_in=D, d_sae=F, normalization={"scale": SCALE, "center": False, "mean": None}
        )
    )
    with torch.no_grad():
        sae.b_enc.fill_(-0.2)
    save_sae(sae.eval(), folder)
    return sae.eval(), sae_lens.SAE.load_from_disk(folder).eval()


def test_mean_pooling_matches_saebench(sae_pair):
    ours, theirs = sae_pair
    padded, rows, offsets, _ = texts()
    llm_theirs = ac.create_meaned_model_activations({"c": padded})["c"]
    torch.testing.assert_close(pr.mean_pool(rows, offsets), llm_theirs, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        sae_theirs = ac.get_sae_meaned_activations({"c": padded}, theirs, sae_batch_size=16)["c"]
        sae_ours = pr.mean_pool(rows, offsets, encode=lambda x: ours.encode(x * SCALE))
    assert (sae_ours > 0).any()
    # our latents live in the normalized space, the export's in raw units (z / s)
    torch.testing.assert_close(sae_ours * (1 / SCALE), sae_theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("k", [1, 5, 20])
def test_top_k_selection_and_accuracy_match_saebench(sae_pair, k):
    ours, _ = sae_pair
    _, rows, offsets, labels = texts()
    with torch.no_grad():
        X = pr.mean_pool(rows, offsets, encode=lambda x: ours.encode(x * SCALE)).numpy()
    train, test = np.arange(40), np.arange(40, 60)
    mine = pr.top_k_mean_diff(X[train], labels[train], k)
    mask = pt.get_top_k_mean_diff_mask(
        torch.from_numpy(X[train]), torch.from_numpy(labels[train]).long(), k
    )
    assert set(mine.tolist()) == set((~mask).nonzero().flatten().tolist())
    acc = pr.probe_accuracy(X[train][:, mine], labels[train], X[test][:, mine], labels[test])
    Xt = lambda i: pt.apply_topk_mask_reduce_dim(torch.from_numpy(X[i]), mask)  # noqa: E731
    _, their_acc = pt.train_sklearn_probe(
        Xt(train),
        torch.from_numpy(labels[train]).long(),
        Xt(test),
        torch.from_numpy(labels[test]).long(),
    )
    assert acc == pytest.approx(their_acc, abs=1e-12)
    assert acc > 0.5
