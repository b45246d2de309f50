"""The GPU code paths against the CPU path (run by scripts/gpu_check.sh; skipped without CUDA):
absorption's L1 probe on the device, the model's bf16 forward on CUDA, the probes' torch fits,
the pooled probing latents summed on the device, the weights' placement."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hsae_utils.evals.absorption import train_l1_probe

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# Stated tolerance of the device probe: the same init and batch order, fp32 on both; the
# reductions' order differs, so weights agree to 1e-3 absolute after 50 epochs of Adam and the
# ranking that selects each letter's main latents (top 10) is the same for >= 90 % of entries.
L1_PROBE_ATOL, L1_RANK_AGREEMENT = 1e-3, 0.9


@cuda
def test_l1_probe_on_the_gpu_equals_the_cpu_path():
    g = torch.Generator().manual_seed(0)
    z = torch.relu(torch.randn(600, 256, generator=g))
    y = torch.randint(0, 26, (600,), generator=g)
    z[torch.arange(600), y] += 3.0  # a planted latent per letter
    w_cpu = train_l1_probe(z, y, seed=1)
    w_gpu = train_l1_probe(z.cuda(), y, seed=1)
    assert w_gpu.device.type == "cpu"
    torch.testing.assert_close(w_gpu, w_cpu, atol=L1_PROBE_ATOL, rtol=0)
    top_cpu, top_gpu = w_cpu.topk(10).indices, w_gpu.topk(10).indices
    agree = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(top_cpu, top_gpu))
    assert agree >= L1_RANK_AGREEMENT * top_cpu.numel()
    assert (top_gpu[:, 0] == torch.arange(26)).all()  # the planted latents rank first


@cuda
def test_gemma_runs_in_bf16_on_a_bf16_card():
    from hsae_utils.config import get_profile
    from hsae_utils.data.model import forward_dtype

    expected = (
        torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float32
    )
    assert forward_dtype(get_profile("paper"), "cuda") == expected


@cuda
def test_probe_fits_on_the_gpu_equal_the_cpu_fit_and_sklearns_predictions():
    from hsae_utils.evals import logreg

    from .test_logreg import BATCH_ATOL, CASES, sk_fit

    for case, (make, balanced) in CASES.items():
        X, y = make(0)
        X_te, _ = make(1)
        args = (torch.from_numpy(X)[None], torch.from_numpy(y)[None])
        cpu = logreg.fit_logreg(*args, balanced=balanced)
        gpu = logreg.fit_logreg(*(a.cuda() for a in args), balanced=balanced)
        # fp64 on both; only the reductions' order differs
        torch.testing.assert_close(gpu.coef.cpu(), cpu.coef, atol=1e3 * BATCH_ATOL, rtol=0)
        pred = gpu.decision_function(torch.from_numpy(X_te).cuda()[None])[0] > 0
        sk = sk_fit(X, y, balanced, max_iter=1000)
        np.testing.assert_array_equal(pred.cpu().numpy().astype(int), sk.predict(X_te), case)


@cuda
def test_absorption_and_probing_on_cuda_use_the_torch_fits_and_match_the_cpu_path():
    from hsae_utils.evals import absorption as ab
    from hsae_utils.evals import probing as pr
    from hsae_utils.evals.adapter import SAEAdapter

    from .test_logreg import RandomReLUSAE, noisy_letters
    from .test_probing import DimSAE, synthetic_probing_data

    rng = np.random.default_rng(0)
    data = ab.AbsorptionData.from_arrays(
        *noisy_letters(30, rng), *noisy_letters(12, rng), min_letters=20
    )
    cpu, cpu_rows = ab.evaluate_absorption(SAEAdapter(RandomReLUSAE()), data, seed=0)
    gpu, gpu_rows = ab.evaluate_absorption(SAEAdapter(RandomReLUSAE().cuda()), data, seed=0)
    # the L1 probe's ranking may differ in its last digits on the GPU (test above), so the
    # main latents agree on most letters, and the scores within a few hundredths
    same = sum(a["main_latents"] == b["main_latents"] for a, b in zip(cpu_rows, gpu_rows))
    assert same >= 0.9 * len(cpu_rows)
    for k in ("mean_absorption_fraction_score", "mean_full_absorption_score"):
        assert abs(gpu[k] - cpu[k]) <= 0.05, k
    pdata = synthetic_probing_data(n_per_class=60, n_classes=4, d=24, seed=1)
    s_cpu, _ = pr.evaluate_sparse_probing(SAEAdapter(DimSAE(24)), pdata, (1, 5, 20))
    s_gpu, _ = pr.evaluate_sparse_probing(SAEAdapter(DimSAE(24).cuda()), pdata, (1, 5, 20))
    for k in s_cpu:
        assert s_gpu[k] == pytest.approx(s_cpu[k], abs=1e-6), k


@cuda
def test_weights_go_straight_to_the_gpu_and_tf32_stays_inside_the_forward():
    from hsae_utils.config import get_profile
    from hsae_utils.data.model import load_model

    P = get_profile("paper-tiny")
    torch.cuda.reset_peak_memory_stats()
    model = load_model(P, device="cuda")
    assert {p.device.type for p in model.parameters()} == {"cuda"}
    assert getattr(model.original_model, "hf_device_map", None)  # placed by from_pretrained
    assert not torch.backends.cuda.matmul.allow_tf32


@cuda
def test_pooled_latents_of_a_cuda_sae_equal_the_cpu_pooling():
    from hsae_utils.evals import probing as pr
    from hsae_utils.evals.adapter import SAEAdapter

    from .test_probing import DimSAE, synthetic_probing_data

    data = synthetic_probing_data(n_per_class=30, n_classes=3, d=16, seed=2)
    (cpu,) = pr.sae_features_many([SAEAdapter(DimSAE(16))], data, batch_tokens=64)
    (gpu,) = pr.sae_features_many([SAEAdapter(DimSAE(16).cuda())], data, batch_tokens=64)
    np.testing.assert_allclose(gpu, cpu, atol=1e-6, rtol=1e-6)
