"""Sparse probing's pooled latents summed per text where they were encoded (what a CUDA SAE does,
probing.mean_pool_many(reduce_on_device=True)), against the row-by-row host sum."""

from __future__ import annotations

import numpy as np
import torch

from hsae_utils.evals import probing as pr


def test_per_text_sums_on_the_device_equal_the_row_by_row_sum():
    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 40, size=57)  # texts without rows too; chunks cut texts
    offsets = torch.from_numpy(np.r_[0, np.cumsum(lengths)])
    acts = rng.normal(size=(int(offsets[-1]), 12)).astype(np.float32)
    keep = rng.random(len(acts)) > 0.1
    W = torch.from_numpy(rng.normal(size=(12, 30)).astype(np.float32))
    encoders = [None, lambda r: torch.relu(r @ W)]
    host = pr.mean_pool_many(acts, offsets, encoders, batch=64, row_keep=keep)
    device = pr.mean_pool_many(
        acts, offsets, encoders, batch=64, row_keep=keep, reduce_on_device=True
    )
    for a, b in zip(device, host):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)  # fp32 results of fp64 sums
    # and against an independent per-text mean
    z = torch.relu(torch.from_numpy(acts) @ W).double().numpy()
    for t in range(len(lengths)):
        rows = slice(int(offsets[t]), int(offsets[t + 1]))
        k = keep[rows]
        expected = z[rows][k].mean(0) if k.any() else np.zeros(30)
        np.testing.assert_allclose(device[1][t].numpy(), expected, atol=1e-5, rtol=1e-5)
