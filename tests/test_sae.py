"""SAE architectures: forward conventions, sparsity patterns, the decoder constraint, export."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F_

from hsae_utils.config import get_profile
from hsae_utils.method.checkpoint import folded_weights, load_sae, save_sae
from hsae_utils.method.saes import (
    ARCHITECTURES,
    BatchTopKSAE,
    BatchTopKSAEConfig,
    HierarchicalSAE,
    HierarchicalSAEConfig,
    ReLUSAE,
    ReLUSAEConfig,
    TopKSAE,
    TopKSAEConfig,
    config_from_profile,
    stage_switches,
)
from hsae_utils.method.train import TrainConfig, make_optimizer, train_step

D, F = 16, 48


pytestmark = pytest.mark.usefixtures("one_thread")


def make(arch: str, seed: int = 0, **kw):
    cls = ARCHITECTURES[arch]
    if arch in ("topk", "batchtopk"):
        kw.setdefault("k", 5)
    return cls(cls.config_class(d_in=D, d_sae=F, **kw), seed=seed)


def batch(n: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_init_is_tied_unit_norm_with_zero_biases(arch):
    sae = make(arch)
    assert torch.allclose(sae.W_dec.norm(dim=-1), torch.ones(F))
    assert torch.equal(sae.W_enc, sae.W_dec.T)
    assert not sae.b_enc.any() and not sae.b_dec.any()
    assert torch.equal(make(arch, seed=0).W_dec, sae.W_dec)
    assert not torch.equal(make(arch, seed=1).W_dec, sae.W_dec)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_decoder_rows_stay_unit_norm_and_grad_is_tangent(arch):
    sae = make(arch)
    opt = make_optimizer(sae, TrainConfig(lr=1e-2))  # large lr + weight decay: norms would drift
    for step in range(5):
        out = sae.loss(batch(seed=step), step, 5)
        opt.zero_grad()
        out.loss.backward()
        sae.remove_parallel_decoder_grad()
        radial = (sae.W_dec.grad * sae.W_dec).sum(-1)
        assert radial.abs().max() < 1e-5
        opt.step()
        sae.normalize_decoder_()
        assert torch.allclose(sae.W_dec.norm(dim=-1), torch.ones(F), atol=1e-6)
    _, events = train_step(sae, opt, batch(seed=9), 5, 10)
    assert torch.allclose(sae.W_dec.norm(dim=-1), torch.ones(F), atol=1e-6)


def test_relu_encode_decode_and_loss_convention():
    sae = make("relu", l1_coefficient=0.04)
    with torch.no_grad():
        sae.b_enc.normal_()
        sae.b_dec.normal_()
    x = batch()
    z = torch.relu(x @ sae.W_enc + sae.b_enc)  # Eq. 1: no b_dec subtraction
    xhat = z @ sae.W_dec + sae.b_dec  # Eq. 2
    got_xhat, got_z = sae(x)
    assert torch.allclose(got_z, z, atol=1e-6) and torch.allclose(got_xhat, xhat, atol=1e-5)
    expected = (x - xhat).pow(2).sum(-1).mean() + 0.04 * z.abs().sum(-1).mean()
    assert torch.allclose(sae.loss(x, 0, 10).loss, expected, rtol=1e-5)


def test_squared_error_gradient_is_bit_identical_to_autograd():
    from hsae_utils.method.saes.base import squared_error

    xhat, x = batch(seed=1).requires_grad_(), batch(seed=2).requires_grad_()
    weights = torch.rand(xhat.shape[0])
    (squared_error(xhat, x) * weights).sum().backward()
    ours = xhat.grad.clone(), x.grad.clone()
    xhat.grad = x.grad = None
    ((xhat - x).pow(2).sum(-1) * weights).sum().backward()
    assert torch.equal(ours[0], xhat.grad) and torch.equal(ours[1], x.grad)


def test_hierarchical_loss_uses_scheduled_and_adaptive_l1_weight():
    cfg = HierarchicalSAEConfig(d_in=D, d_sae=F)
    assert cfg.l1_coefficient == pytest.approx(1 / F**0.5)
    sae = HierarchicalSAE(cfg)
    x = batch()
    out = sae.loss(x, step=25, total_steps=100)
    mse = out.sq_err_B.mean()
    lam = cfg.l1_coefficient * 0.75
    alpha = (2.5 / mse).clamp(0.1, 2.0)
    l1 = out.z_BF.sum(-1).mean()
    assert out.metrics["lambda_t"] == pytest.approx(lam)
    assert torch.allclose(out.loss, mse + lam * alpha * l1, rtol=1e-5)
    # all switches off: a ReLU SAE with constant lambda_0
    plain = HierarchicalSAE(HierarchicalSAEConfig.for_stage(0, D, F))
    ref = ReLUSAE(ReLUSAEConfig(d_in=D, d_sae=F, l1_coefficient=1 / F**0.5))
    assert torch.equal(plain.loss(x, 25, 100).loss, ref.loss(x, 25, 100).loss)
    assert stage_switches(3) == {
        "linear_sparsity": True,
        "resampling": True,
        "window_tracking": True,
        "adaptive_sparsity": False,
        "clustering": False,
    }


def test_topk_keeps_exactly_k_largest_per_row():
    sae = make("topk", k=5)
    with torch.no_grad():
        sae.b_enc.fill_(10.0)  # all pre-activations positive, so ReLU drops none of the top k
    x = batch()
    z = sae.encode(x)
    assert ((z != 0).sum(-1) == 5).all()
    pre = sae.pre_acts(x)
    kept = z.topk(5, dim=-1).values.sort(-1).values
    assert torch.equal(kept, pre.topk(5, dim=-1).values.sort(-1).values)
    # ReLU after TopK: negative winners are dropped, never replaced
    with torch.no_grad():
        sae.b_enc.fill_(-100.0)
    assert not sae.encode(x).any()


def gao_normalized_mse(recon, xs):
    """openai/sparse_autoencoder train.py / kernels.py, written from their formula: the batch MSE
    over the MSE of the batch mean (the centred variance), not a per-token ratio."""
    return F_.mse_loss(recon, xs) / F_.mse_loss(xs.mean(0, keepdim=True).expand_as(xs), xs)


def test_topk_auxk_follows_gao_et_al_loss():
    sae = make("topk", k=5, dead_after_tokens=64)
    with torch.no_grad():
        sae.b_dec.normal_()  # their pre_bias: must cancel in the aux target
    x = batch() * 2 + 1  # a mean far from 0: the centred and uncentred norms differ
    assert sae.loss(x, 0, 10).metrics["aux"] == 0
    dead = torch.arange(F) < 10
    sae.firing.tokens_since_fired_F[dead] = 64  # ten latents dead
    out = sae.loss(x, 0, 10)
    with torch.no_grad():  # their forward: mask the pre-acts to the dead latents, top-k, ReLU
        pre = sae.pre_acts(x)
        v, i = (pre * dead).topk(min(512, F // 2), dim=-1)
        z_aux = torch.zeros_like(pre).scatter(-1, i, v.relu())
        xhat = sae(x)[0]
        aux_recons = z_aux @ sae.W_dec + sae.b_dec
        aux = gao_normalized_mse(aux_recons, x - xhat + sae.b_dec)
        var_x = F_.mse_loss(x.mean(0, keepdim=True).expand_as(x), x)  # 1 / their mse_scale
        gao_loss = F_.mse_loss(xhat, x) / var_x + aux / 32
    assert aux > 0.1  # random dead latents explain little of the residual
    assert torch.allclose(out.metrics["aux"], aux, rtol=1e-5)
    # ours = theirs x D var_x: the summed squared error instead of the per-element mean
    assert torch.allclose(out.loss, gao_loss * D * var_x, rtol=1e-5)


def test_batchtopk_keeps_k_times_batch_and_learns_threshold():
    sae = make("batchtopk", k=5, threshold_lr=0.5)
    with torch.no_grad():
        sae.b_enc.fill_(10.0)
    x = batch(64)
    out = sae.loss(x, 0, 10)
    assert int((out.z_BF != 0).sum()) == 5 * 64
    per_row = (out.z_BF != 0).sum(-1)
    assert per_row.min() != per_row.max()  # batch-level, not per-row
    kept_min = out.z_BF[out.z_BF > 0].min()
    sae.after_step(0, x, out)
    assert torch.allclose(sae.threshold, 0.5 * kept_min)
    # inference: a JumpReLU with the global threshold
    sae.eval()
    pre = sae.pre_acts(x)
    assert torch.equal(sae.encode(x), pre.relu() * (pre > sae.threshold))
    sae.train()
    assert int((sae.encode(x) != 0).sum()) == 5 * 64
    assert torch.equal(sae.encode(x, use_threshold=True), pre.relu() * (pre > sae.threshold))


def _trained(arch: str) -> torch.nn.Module:
    """A few real steps so weights, biases, counters and the threshold are all non-trivial."""
    sae = make(arch, normalization={"scale": 0.37, "center": False, "mean": None})
    if arch == "hierarchical":
        sae = HierarchicalSAE(
            HierarchicalSAEConfig(
                d_in=D,
                d_sae=F,
                window_size=3,
                resample_every=3,
                merge_every=3,
                dead_rate=0.2,
                normalization={"scale": 0.37, "center": False, "mean": None},
            )
        )
    opt = make_optimizer(sae, TrainConfig(lr=1e-2))
    gen = torch.Generator().manual_seed(0)
    for step in range(6):
        train_step(sae, opt, batch(seed=step) + 0.5, step, 6, 1.0, gen)
    return sae.eval()


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_save_load_round_trip_is_exact(arch, tmp_path):
    sae = _trained(arch)
    save_sae(sae, tmp_path / arch, train_config=TrainConfig(steps=6), metadata={"profile": "test"})
    back = load_sae(tmp_path / arch)
    assert type(back) is type(sae) and back.cfg == sae.cfg and not back.training
    for (k, a), (k2, b) in zip(sae.state_dict().items(), back.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    files = {p.name for p in (tmp_path / arch).iterdir()}
    assert {
        "cfg.json",
        "sae_weights.safetensors",
        "sparsity.safetensors",
        "hsae_config.json",
        "hsae_weights.safetensors",
    } <= files
    assert not [f for f in files if f.endswith(".tmp")]
    info = json.loads((tmp_path / arch / "hsae_config.json").read_text())
    assert info["architecture"] == type(sae).__name__ and info["train"]["steps"] == 6


@pytest.mark.parametrize("center", [False, True])
def test_folded_weights_act_on_raw_activations(center):
    """Independent algebra: raw x -> z / s and xhat / s + mean, with unit-norm decoder rows."""
    mean = torch.linspace(-1, 1, D)
    s = 0.37
    norm = {"scale": s, "center": center, "mean": mean.tolist() if center else None}
    sae = make("relu", normalization=norm)
    with torch.no_grad():
        sae.b_enc.normal_()
        sae.b_dec.normal_()
    w = folded_weights(sae)
    x_raw = batch() * 3 + 2
    x_norm = ((x_raw - mean) if center else x_raw) * s
    z_raw = torch.relu(x_raw @ w["W_enc"] + w["b_enc"])
    xhat_raw = z_raw @ w["W_dec"] + w["b_dec"]
    xhat_norm, z = sae(x_norm)
    assert torch.allclose(z_raw, z / s, atol=1e-5)  # latents in raw units
    assert torch.allclose(xhat_raw, xhat_norm / s + (mean if center else 0), atol=1e-4)
    assert torch.allclose(w["W_dec"].norm(dim=-1), torch.ones(F), atol=1e-6)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_sae_lens_loads_our_folder_with_equal_reconstructions(arch, tmp_path):
    sae_lens = pytest.importorskip("sae_lens")
    sae = _trained(arch)
    save_sae(sae, tmp_path, metadata={"profile": "test"})
    theirs = sae_lens.SAE.load_from_disk(tmp_path)
    expected = {
        "relu": "standard",
        "hierarchical": "standard",
        "topk": "topk",
        "batchtopk": "jumprelu",
    }[arch]
    assert theirs.cfg.architecture() == expected
    s = sae.cfg.normalization["scale"]
    x_raw = batch(128, seed=7) / s  # raw activations; ours sees x * s
    with torch.no_grad():
        xhat_ours, z_ours = sae(x_raw * s)
        z_theirs = theirs.encode(x_raw)
        xhat_theirs = theirs.decode(z_theirs)
    assert (z_ours != 0).sum() > 0
    assert torch.equal(z_ours != 0, z_theirs != 0)
    assert torch.allclose(z_theirs, z_ours / s, rtol=1e-4, atol=1e-5)  # latents in raw units
    assert torch.allclose(xhat_theirs, xhat_ours / s, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_exports_pass_saebench_decoder_norm_check(arch, tmp_path):
    """SAEBench refuses (warns and returns False for) custom SAEs whose decoder rows are not
    unit-norm; its absorption calculator assumes unit rows too (issue 14, item 2)."""
    sae_lens = pytest.importorskip("sae_lens")
    general_utils = pytest.importorskip("sae_bench.sae_bench_utils.general_utils")
    save_sae(_trained(arch), tmp_path)
    theirs = sae_lens.SAE.load_from_disk(tmp_path)
    assert general_utils.check_decoder_norms(theirs.W_dec.data)


def test_config_from_profile_uses_profile_sizes():
    profile = get_profile("smoke")
    cfg = config_from_profile("hierarchical", profile, **stage_switches(2))
    assert (cfg.d_in, cfg.d_sae, cfg.window_size) == (576, 576, profile.window_size)
    assert cfg.resampling and not cfg.window_tracking
    assert config_from_profile("topk", profile).k == profile.topk_k
    assert isinstance(config_from_profile("batchtopk", profile), BatchTopKSAEConfig)
    assert isinstance(config_from_profile("relu", profile), ReLUSAEConfig)
    assert isinstance(TopKSAE(TopKSAEConfig(d_in=4, d_sae=8, k=2)), TopKSAE)
    assert isinstance(BatchTopKSAE(BatchTopKSAEConfig(d_in=4, d_sae=8, k=2)), TopKSAE)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_encode_decode_accept_extra_leading_dims(arch):
    sae = make(arch).eval()
    x_BSD = torch.randn(3, 5, D, generator=torch.Generator().manual_seed(0))
    xhat, z = sae(x_BSD)
    xhat_flat, z_flat = sae(x_BSD.reshape(15, D))
    assert z.shape == (3, 5, F) and xhat.shape == (3, 5, D)
    assert torch.allclose(z.reshape(15, F), z_flat)
    assert torch.allclose(xhat.reshape(15, D), xhat_flat)


def test_batch_topk_selection_equals_a_full_topk():
    from hsae_utils.method.saes.batchtopk import batch_topk_codes, kth_largest

    g = torch.Generator().manual_seed(0)
    for shift in (-0.5, -3.0):  # typical, and fewer positive activations than k x B
        pre_BF = torch.randn(512, 576, generator=g) + shift
        acts_N = pre_BF.relu().flatten()
        vals, idx = acts_N.topk(20 * 512, sorted=False)
        expected = torch.zeros_like(acts_N).scatter_(0, idx, vals).view_as(pre_BF)
        assert torch.equal(batch_topk_codes(pre_BF, 20), expected)
    v_N = torch.randn(100_000, generator=g)
    for m in (1, 77, 5_000, 50_000):
        assert kth_largest(v_N, m) == v_N.topk(m).values[-1]
