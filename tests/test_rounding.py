"""Reproducibility across machines (hsae_utils.experiment.rounding): training does not depend on the number of
torch threads, and a one-ulp difference in the inputs (what another BLAS kernel can make of a
matmul) moves TopK / BatchTopK metrics by less than the spread over seeds, ReLU's by far less.
Sizes: a [512, 128] batch, above the size where torch splits a reduction among threads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hsae_utils.experiment.ground_truth.data import TensorStore
from hsae_utils.experiment.rounding import NudgedStore, divergence, nudge_ulp
from hsae_utils.method.saes import ARCHITECTURES
from hsae_utils.method.train import TrainConfig, train

D, F, B, STEPS = 128, 512, 512, 60
# Short dead windows, so AuxK (the dead latents' loss) runs within the few steps.
CONFIGS = {
    "topk": dict(k=8, dead_after_tokens=B // 2),
    "batchtopk": dict(k=8, dead_after_tokens=B // 4),
    "relu": dict(l1_coefficient=0.2),
}


@pytest.fixture(scope="module")
def data():
    """Sparse sums of 1,024 random directions plus noise: superposed features, like activations."""
    g = torch.Generator().manual_seed(0)
    dirs = torch.nn.functional.normalize(torch.randn(1024, D, generator=g), dim=1)
    codes = torch.rand(8192, 1024, generator=g) * (torch.rand(8192, 1024, generator=g) < 0.01)
    x = codes @ dirs * 4 + 0.05 * torch.randn(8192, D, generator=g)
    return x, x[:2048]


def fit(arch, x, seed, tmp_path, name, threads=1):
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        cls = ARCHITECTURES[arch]
        sae = cls(cls.config_class(d_in=D, d_sae=F, **CONFIGS[arch]), seed=seed)
        cfg = TrainConfig(steps=STEPS, batch_size=B, seed=seed, log_every=1, checkpoint_every=STEPS)
        return train(sae, TensorStore(x), cfg, tmp_path / name, progress=False)
    finally:
        torch.set_num_threads(old)


def ev(sae, x):
    with torch.no_grad():
        xhat = sae.decode(sae.encode(x))
    return float(1 - (x - xhat).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_auxk_runs_do_not_depend_on_the_thread_count(data, tmp_path, arch):
    x, _ = data
    one = fit(arch, x, 0, tmp_path, "one", threads=1)
    two = fit(arch, x, 0, tmp_path, "two", threads=2)
    assert any(row["aux"] > 0 for row in one.log)  # AuxK was active: dead latents were revived
    for name, p in one.sae.state_dict().items():
        assert torch.equal(p, two.sae.state_dict()[name]), name


def test_one_ulp_moves_topk_less_than_seeds_do_and_relu_not_at_all(data, tmp_path):
    x, x_eval = data
    nudged = nudge_ulp(x, seed=1)
    assert torch.equal(torch.nextafter(nudged, x), x) and not torch.equal(nudged, x)
    out = {}
    for arch in CONFIGS:
        runs = [fit(arch, x, s, tmp_path, f"{arch}-{s}").sae for s in (0, 1, 2)]
        moved = fit(arch, nudged, 0, tmp_path, f"{arch}-nudged").sae
        seed_std = float(np.std([ev(r, x_eval) for r in runs], ddof=1))
        out[arch] = (
            abs(ev(moved, x_eval) - ev(runs[0], x_eval)),
            seed_std,
            divergence(runs[0], moved, x_eval),
        )
    for arch in ("topk", "batchtopk"):  # docs/reproducibility.md: within the seeds' spread
        change, seed_std, _ = out[arch]
        assert change <= seed_std, (arch, change, seed_std)
    print(
        {
            a: (f"{c:.2g}", f"{s:.2g}", f"{d['firing_disagreement']:.2g}")
            for a, (c, s, d) in out.items()
        }
    )
    change, seed_std, div = out["relu"]  # continuous: carried along as a nudge
    assert change <= 1e-3 * seed_std and div["firing_disagreement"] <= 1e-3, out["relu"]


def test_nudged_store_feeds_the_stores_own_batches_one_ulp_apart_and_resumes(data):
    x, _ = data
    store = TensorStore(x)
    nudged = NudgedStore(store)
    assert (nudged.n_tokens, nudged.d_model) == (store.n_tokens, store.d_model)
    plain = [b for b, _ in zip(store.iter_batches(512, seed=3), range(20))]
    moved = [b for b, _ in zip(nudged.iter_batches(512, seed=3), range(20))]
    for a, b in zip(plain, moved):  # the same rows, each element one float away
        assert bool((a != b).all()) and torch.equal(torch.nextafter(b, a), a)
    ups = [b > a for a, b in zip(plain, moved)]
    assert 0.45 < ups[0].float().mean() < 0.55 and not torch.equal(ups[0], ups[1])  # fresh coins
    resumed = [b for b, _ in zip(nudged.iter_batches(512, seed=3, start_step=15), range(5))]
    assert all(torch.equal(a, b) for a, b in zip(moved[15:], resumed))
