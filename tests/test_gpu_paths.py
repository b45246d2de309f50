"""The GPU code paths against the CPU path (run by scripts/gpu_check.sh; skipped without CUDA):
absorption's L1 probe on the device, the model's bf16 forward on CUDA."""

from __future__ import annotations

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
