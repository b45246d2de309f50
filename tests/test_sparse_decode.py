"""The sparse TopK / BatchTopK step equals the dense math: outputs and all gradients."""

from __future__ import annotations

import pytest
import torch

from hsae_utils.method.saes import BatchTopKSAE, BatchTopKSAEConfig, TopKSAE, TopKSAEConfig
from hsae_utils.method.saes import sparse_decode as sd
from hsae_utils.method.saes.sparse_decode import SPARSE_MAX_DENSITY, use_sparse
from hsae_utils.method.train import TrainConfig, make_optimizer, train_step

pytestmark = pytest.mark.usefixtures("one_thread")
D, F, K = 24, 96, 7
PARAMS = ("W_enc", "b_enc", "W_dec", "b_dec")


def pair(cls, cfg_cls, dead: bool):
    """Two SAEs with the same trained-looking weights, one per decode mode."""
    saes = []
    for mode in ("dense", "sparse"):
        sae = cls(cfg_cls(d_in=D, d_sae=F, k=K, dead_after_tokens=10), seed=3)
        with torch.no_grad():  # non-trivial biases, so b_enc / b_dec gradients are exercised
            sae.b_enc.copy_(torch.linspace(-0.3, 0.2, F))
            sae.b_dec.copy_(torch.linspace(-1, 1, D))
            if dead:  # AuxK runs on these latents (it reads xhat and pre-acts of the step)
                sae.firing.tokens_since_fired_F[: F // 4] = 100
        sae.decode_mode = mode
        saes.append(sae)
    return saes


def inputs() -> torch.Tensor:
    x_BD = torch.randn(64, D, generator=torch.Generator().manual_seed(1))
    x_BD[:3] = 0.0  # with b_enc < 0 on most latents some rows keep few or no BatchTopK latents
    return x_BD


def dense_reference(sae, x_BD):
    """xhat from the dense codes by plain matmul (independent of either decode path)."""
    pre_BF = x_BD @ sae.W_enc + sae.b_enc
    z_BF = sae.train_codes(pre_BF)
    return z_BF @ sae.W_dec + sae.b_dec, z_BF


@pytest.mark.parametrize("sampled", ["sampled_addmm", "gemm"])
@pytest.mark.parametrize("dead", [False, True])
@pytest.mark.parametrize(
    "cls,cfg_cls", [(TopKSAE, TopKSAEConfig), (BatchTopKSAE, BatchTopKSAEConfig)]
)
def test_sparse_decode_equals_dense_outputs_and_gradients(cls, cfg_cls, dead, sampled, monkeypatch):
    # Both ways of the code's gradient: sampled at the entries, or the GEMM read there.
    monkeypatch.setattr(sd, "SAMPLED_MAX_DENSITY", 1.0 if sampled == "sampled_addmm" else 0.0)
    dense, sparse = pair(cls, cfg_cls, dead)
    x_BD = inputs()
    outs = []
    for sae in (dense, sparse):
        out = sae.loss(x_BD, 1, 10)
        out.loss.backward()
        outs.append(out)
    od, os_ = outs
    xhat_ref, z_ref = dense_reference(dense, x_BD)
    torch.testing.assert_close(os_.xhat_BD, xhat_ref.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(os_.z_BF, z_ref.detach(), atol=0, rtol=0)  # same selection
    torch.testing.assert_close(os_.loss, od.loss, atol=1e-5, rtol=1e-5)
    assert torch.equal(os_.fired_F, od.fired_F)
    if dead:
        assert float(od.metrics["aux"]) > 0
    for name in PARAMS:
        g_dense, g_sparse = getattr(dense, name).grad, getattr(sparse, name).grad
        assert g_dense.abs().sum() > 0, name
        torch.testing.assert_close(g_sparse, g_dense, atol=1e-5, rtol=1e-5, msg=name)
    if cls is BatchTopKSAE:  # a variable count per row, empty rows included
        per_row = (os_.z_BF > 0).sum(1)
        assert per_row.min() == 0 and per_row.max() > per_row.float().mean() > 0


def test_sparse_encode_gradient_in_x_equals_dense():
    """The encoder's backward over the entries also gives x's gradient (not needed in training,
    where x has none, but part of the math): against autograd of the dense expression."""
    g = torch.Generator().manual_seed(4)
    x_BD = torch.randn(16, D, generator=g, requires_grad=True)
    W_DF = torch.randn(D, F, generator=g, requires_grad=True)
    b_F = torch.randn(F, generator=g, requires_grad=True)
    w_BF = torch.randn(16, F, generator=g)
    with torch.no_grad():
        pre_BF = x_BD @ W_DF + b_F
    pre_N, codes = sd.topk_sparse(pre_BF, K)
    (
        sd.sparse_encode(pre_N, x_BD, W_DF, b_F, codes) * w_BF[codes.rows_N, codes.cols_N]
    ).sum().backward()
    sparse_grads = [t.grad.clone() for t in (x_BD, W_DF, b_F)]
    for t in (x_BD, W_DF, b_F):
        t.grad = None
    keep_BF = codes.dense(torch.ones_like(pre_N)) > 0
    ((x_BD @ W_DF + b_F) * w_BF * keep_BF).sum().backward()
    for got, t in zip(sparse_grads, (x_BD, W_DF, b_F)):
        torch.testing.assert_close(got, t.grad, atol=1e-5, rtol=1e-5)


def test_sparse_training_steps_track_dense():
    dense, sparse = pair(BatchTopKSAE, BatchTopKSAEConfig, dead=True)
    opts = [make_optimizer(s, TrainConfig(lr=1e-3)) for s in (dense, sparse)]
    for step in range(5):
        x_BD = torch.randn(64, D, generator=torch.Generator().manual_seed(10 + step))
        for sae, opt in zip((dense, sparse), opts):
            train_step(sae, opt, x_BD, step, 10)
    for name in PARAMS:
        torch.testing.assert_close(
            getattr(sparse, name), getattr(dense, name), atol=1e-5, rtol=1e-5, msg=name
        )
    torch.testing.assert_close(sparse.threshold, dense.threshold, atol=1e-6, rtol=1e-5)


def test_decode_mode_choice_and_bad_values():
    assert use_sparse("sparse", 320, 2304) and not use_sparse("dense", 1, 2304)
    assert use_sparse("auto", 1, 2304) == (1 / 2304 <= SPARSE_MAX_DENSITY)
    assert not use_sparse("auto", 320, 2304)  # dense is faster at the paper's 14 % on CPU
    assert use_sparse("auto", 80, 2304) and not use_sparse("auto", 80, 2304, "cuda")
    with pytest.raises(ValueError, match="decode mode"):
        use_sparse("csr", 1, 2)
    with pytest.raises(ValueError, match="decode must be one of"):
        TrainConfig(decode="csr")
