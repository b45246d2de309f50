"""The probing store (hsae_utils.evals.probing): bf16 above 4 GiB, never fp16 (Gemma-2's residuals
exceed its range), every batch checked finite; and the pooling of all SAEs in one pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hsae_utils.data.activations import to_storage
from hsae_utils.evals import probing as pr
from hsae_utils.evals.adapter import SAEAdapter

from .conftest import TINY_D
from .test_probing import DimSAE, synthetic_probing_data, toy_probing_setup


def test_store_dtype_is_fp32_then_bf16_never_fp16():
    assert pr.store_dtype(1000, 2304) == "float32"
    assert pr.store_dtype(10**7, 2304) == "bfloat16"  # the paper's scale: 92 GB in fp32


def test_bf16_store_keeps_values_beyond_fp16_range():
    """Gemma-2-sized residual norms (entries of 10^5) overflow fp16 to inf, not bf16."""
    x = torch.tensor([[1e5, -3e5, 0.5, 2.0], [7e4, 1.0, -1.0, 0.0]])
    with np.errstate(over="ignore"):
        assert not np.isfinite(x.numpy().astype(np.float16)).all()
    stored = to_storage(x, "bfloat16")
    assert stored.dtype == np.uint16
    pooled = pr.mean_pool(stored, torch.tensor([0, 2]), dtype="bfloat16", batch=1)
    torch.testing.assert_close(pooled, x.mean(0, keepdim=True), rtol=2**-8, atol=0)


def test_a_non_finite_residual_stops_the_store_with_the_fix(tiny_model, monkeypatch):
    real = pr.layer_resid

    def overflowing(model, toks, layer):
        r = real(model, toks, layer)
        r[0, 1, 0] = float("inf")
        return r

    monkeypatch.setattr(pr, "layer_resid", overflowing)
    with pytest.raises(pr.NonFiniteActivationsError, match="float32 or bfloat16"):
        pr.token_activations(
            tiny_model, [[0, 5, 6], [0, 7, 8]], 1, special_ids=[0], pad_id=0, progress=False
        )


def test_padding_is_not_checked(tiny_model, monkeypatch):
    """Only a text's own positions count: padding after a short text may be anything."""
    real = pr.layer_resid

    def nan_padding(model, toks, layer):
        r = real(model, toks, layer)
        r[0, -1] = float("nan")  # text 0 is shorter: its last position is padding
        return r

    monkeypatch.setattr(pr, "layer_resid", nan_padding)
    acts, _, _ = pr.token_activations(
        tiny_model, [[0, 5], [0, 7, 8]], 1, special_ids=[0], pad_id=0, progress=False
    )
    assert np.isfinite(acts).all()


def test_a_bf16_store_is_cached_and_read_back_as_bf16(tiny_model, tmp_path, monkeypatch):
    P, tasks = toy_probing_setup()
    fp32 = pr.build_probing_data(tiny_model, P, progress=False, tasks=tasks)
    monkeypatch.setattr(pr, "FP32_STORE_BYTES", 0)
    a = pr.build_probing_data(
        tiny_model, P, cache_root=tmp_path, fingerprint="tiny", progress=False, tasks=tasks
    )
    b = pr.build_probing_data(
        tiny_model, P, cache_root=tmp_path, fingerprint="tiny", progress=False, tasks=tasks
    )
    assert not a.reused and b.reused and a.acts_dtype == b.acts_dtype == "bfloat16"
    assert np.asarray(b.acts_TD).dtype == np.uint16
    ref = pr.mean_pool(fp32.acts_TD, fp32.offsets, row_keep=fp32.row_keep)
    for d in (a, b):  # bf16 rounding: 2^-8 relative per entry
        pooled = pr.mean_pool(d.acts_TD, d.offsets, row_keep=d.row_keep, dtype=d.acts_dtype)
        torch.testing.assert_close(pooled, ref, rtol=2**-7, atol=2**-7 * ref.abs().max().item())
    sae = SAEAdapter(DimSAE(TINY_D))
    np.testing.assert_allclose(
        pr.sae_features(sae, b),
        pr.sae_features(sae, fp32),
        rtol=2**-7,
        atol=2**-7 * float(ref.abs().max()),
    )


def test_pooling_all_saes_in_one_pass_equals_one_pass_each():
    data = synthetic_probing_data(n_per_class=10, tokens_per_text=3)
    saes = []
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        W = torch.randn(16, 24, generator=g)
        sae = DimSAE(24)
        sae.encode = lambda x, W=W: torch.relu(x @ W)
        saes.append(SAEAdapter(sae))
    together = pr.sae_features_many(saes, data, batch_tokens=7)
    for sae, feats in zip(saes, together):
        np.testing.assert_array_equal(feats, pr.sae_features(sae, data, batch_tokens=7))
        s1, rows1 = pr.evaluate_sparse_probing(sae, data, k_values=(1, 5))
        s2, rows2 = pr.evaluate_sparse_probing(sae, data, k_values=(1, 5), features=feats)
        assert s1 == s2 and rows1 == rows2
