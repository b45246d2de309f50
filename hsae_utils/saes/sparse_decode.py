"""Decoding only the active latents of a TopK / BatchTopK code: xhat = z W_dec + b_dec with z
held as (row offsets, latent ids, values), a CSR matrix, instead of a dense [B, F] tensor.

Forward: CSR @ W_dec. Backward: grad W_dec = z^T grad (CSR transposed @ dense); the values'
gradient is (grad W_dec^T) sampled at the active entries only (`sampled_addmm`). Both equal the
dense math up to float summation order. The dense [B, F] gradient of the codes is never formed.

Whether it pays off depends on the device and the density k / d_sae: on one fp32 CPU thread at
k / d_sae = 14 % (the paper's 320 / 2,304) the sparse kernels run at ~1/8 of the dense GEMM's
FLOP rate, so the dense step stays faster (scripts/benchmark.py section 7 measures both). `auto`
takes the sparse path only at or below `SPARSE_MAX_DENSITY`, and only on CPU: the CUDA kernels
(cuSPARSE) have not been measured or tested here yet, so `auto` keeps the dense path there.
"""
from __future__ import annotations

import warnings

import torch
from torch import Tensor

DECODE_MODES = ("auto", "dense", "sparse")
# At or below this fraction of active latents `auto` decodes sparsely. Measured training steps,
# fp32 CPU, one thread, batch 2,048, dense / sparse time (a loaded machine):
#   k / d_sae        3.5 %   7 %    14 %
#   d = 576          1.5x    1.2x   1.05x
#   d = 2,304        1.8x    1.04x  0.8x
SPARSE_MAX_DENSITY = 0.05


def use_sparse(mode: str, k: int, d_sae: int, device_type: str = "cpu") -> bool:
    if mode not in DECODE_MODES:
        raise ValueError(f"decode mode must be one of {DECODE_MODES}, got {mode!r}.")
    return mode == "sparse" or (mode == "auto" and device_type == "cpu"
                                and k / d_sae <= SPARSE_MAX_DENSITY)


def _csr(crow_B1: Tensor, cols_N: Tensor, vals_N: Tensor, shape: tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():  # "CSR support is in beta": the ops used here are tested
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow_B1, cols_N, vals_N, shape, check_invariants=False)


class _SparseDecode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, vals_N: Tensor, crow_B1: Tensor, cols_N: Tensor, W_dec_FD: Tensor) -> Tensor:
        z = _csr(crow_B1, cols_N, vals_N, (crow_B1.numel() - 1, W_dec_FD.shape[0]))
        ctx.save_for_backward(vals_N, crow_B1, cols_N, W_dec_FD)
        return z @ W_dec_FD

    @staticmethod
    def backward(ctx, grad_BD: Tensor):
        vals_N, crow_B1, cols_N, W_dec_FD = ctx.saved_tensors
        grad_vals = grad_W = None
        shape = (crow_B1.numel() - 1, W_dec_FD.shape[0])
        if ctx.needs_input_grad[0]:
            pattern = _csr(crow_B1, cols_N, torch.zeros_like(vals_N), shape)
            grad_vals = torch.sparse.sampled_addmm(pattern, grad_BD, W_dec_FD.T).values()
        if ctx.needs_input_grad[3]:
            grad_W = _csr(crow_B1, cols_N, vals_N, shape).t() @ grad_BD
        return grad_vals, None, None, grad_W


def sparse_decode(vals_N: Tensor, crow_B1: Tensor, cols_N: Tensor, W_dec_FD: Tensor,
                  b_dec_D: Tensor) -> Tensor:
    """xhat_BD for the code whose row b has values vals_N[crow[b]:crow[b+1]] at latents cols_N[..]
    (differentiable in vals_N, W_dec_FD and b_dec_D)."""
    return _SparseDecode.apply(vals_N, crow_B1, cols_N, W_dec_FD) + b_dec_D


def topk_sparse(pre_BF: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """TopK codes as CSR parts (vals_N, crow_B1, cols_N): k entries per row, ReLU'd values
    (zeros kept: they add nothing)."""
    vals_BK, idx_BK = pre_BF.topk(k, dim=-1, sorted=False)
    B = pre_BF.shape[0]
    crow_B1 = torch.arange(0, (B + 1) * k, k, device=pre_BF.device)
    return vals_BK.relu().flatten(), crow_B1, idx_BK.flatten()


def mask_sparse(acts_BF: Tensor, keep_BF: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The entries of acts_BF where keep_BF, as CSR parts (a variable count per row)."""
    rows_N, cols_N = keep_BF.nonzero(as_tuple=True)  # row-major order, as CSR needs
    counts_B = torch.bincount(rows_N, minlength=acts_BF.shape[0])
    crow_B1 = torch.cat([counts_B.new_zeros(1), counts_B.cumsum(0)])
    return acts_BF[rows_N, cols_N], crow_B1, cols_N


def densify(vals_N: Tensor, crow_B1: Tensor, cols_N: Tensor, d_sae: int) -> Tensor:
    """The dense [B, F] code of CSR parts (detached; for statistics and the step's output)."""
    return _csr(crow_B1, cols_N, vals_N.detach(), (crow_B1.numel() - 1, d_sae)).to_dense()
