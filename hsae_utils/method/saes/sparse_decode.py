"""The TopK / BatchTopK training step over the active latents only: of the five [B, D] x [D, F]
matmuls of the dense step, the encoder's forward x W_enc stays dense (it selects the latents),
and the code's gradient is dense above SAMPLED_MAX_DENSITY; the other three run over the entries.

The code z (k active latents per row on average) is held as its active entries: `SparseCodes`
(row offsets, latent ids, and the same entries grouped by latent). Then, N = k B entries:
- decode        xhat = z W_dec + b_dec           one weighted row sum per token: `embedding_bag`
                                                 over W_dec's rows (2 N D FLOPs);
- its backward  grad z = (grad xhat W_dec^T) at the active entries only (`sampled_addmm`,
                2 N D; above SAMPLED_MAX_DENSITY the dense GEMM, 2 B D F, read at the entries is
                faster on CPU), and grad W_dec = z^T grad xhat: one weighted sum per latent of the
                gradient rows of the tokens it is active on (`embedding_bag` over the entries
                grouped by latent, 2 N D);
- the encoder's backward: grad pre is zero outside the active entries, so grad W_enc = x^T grad
                pre is again one weighted sum per latent, of the rows of x (2 N D), and grad b_enc
                a sum per latent.
Every gradient equals the dense math up to float summation order (tests/test_sparse_decode.py).

Whether it pays off depends on the device and k / d_sae: the sparse kernels move a row of D floats
per 2 D FLOPs (no reuse, memory-bound) where the dense GEMM reuses its tiles. `auto` takes the
sparse path at or below `SPARSE_MAX_DENSITY`, and only on CPU: the CUDA kernels have not been
measured or tested here yet. scripts/benchmark.py section 7 measures both steps.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

DECODE_MODES = ("auto", "dense", "sparse")
# At or below this fraction of active latents `auto` takes the sparse step (CPU). Measured by
# scripts/benchmark.py section 7 (fp32 CPU, batch 2,048): see docs/performance.md.
SPARSE_MAX_DENSITY = 0.05
# Above this density the code's gradient is one dense GEMM (grad xhat W_dec^T) read at the
# active entries: `sampled_addmm` does 1/7 of the FLOPs at 14 % but runs at about 1/8 of the
# GEMM's rate on CPU (memory-bound), so at the paper's density the GEMM is faster.
SAMPLED_MAX_DENSITY = 0.10


def use_sparse(mode: str, k: int, d_sae: int, device_type: str = "cpu") -> bool:
    if mode not in DECODE_MODES:
        raise ValueError(f"decode mode must be one of {DECODE_MODES}, got {mode!r}.")
    return mode == "sparse" or (
        mode == "auto" and device_type == "cpu" and k / d_sae <= SPARSE_MAX_DENSITY
    )


@dataclass
class SparseCodes:
    """Where a [B, F] code is non-zero. Entry n sits at row rows_N[n], latent cols_N[n]; rows are
    contiguous (crow_B1[b]:crow_B1[b + 1]); by_latent_N lists the entries grouped by latent
    (latent f's at by_latent_N[offsets_F[f]:offsets_F[f + 1]])."""

    crow_B1: Tensor
    cols_N: Tensor
    rows_N: Tensor
    by_latent_N: Tensor
    offsets_F: Tensor
    d_sae: int

    @classmethod
    def build(cls, crow_B1: Tensor, cols_N: Tensor, d_sae: int) -> "SparseCodes":
        counts_B = crow_B1.diff()
        rows_N = torch.repeat_interleave(
            torch.arange(len(counts_B), device=cols_N.device), counts_B, output_size=cols_N.numel()
        )
        # int32 keys: the stable sort runs ~3x faster than on int64 (CPU)
        by_latent_N = torch.argsort(cols_N.to(torch.int32), stable=True)
        counts_F = torch.bincount(cols_N, minlength=d_sae)
        offsets_F = torch.cat([counts_F.new_zeros(1), counts_F.cumsum(0)[:-1]])
        return cls(crow_B1, cols_N, rows_N, by_latent_N, offsets_F, d_sae)

    def row_sums(self, weights_N: Tensor, table_FD: Tensor) -> Tensor:
        """[B, D]: row b = sum over its entries n of weights_N[n] table_FD[cols_N[n]]."""
        return F.embedding_bag(
            self.cols_N, table_FD, self.crow_B1[:-1], mode="sum", per_sample_weights=weights_N
        )

    def latent_sums(self, weights_N: Tensor, table_BD: Tensor) -> Tensor:
        """[F, D]: row f = sum over latent f's entries n of weights_N[n] table_BD[rows_N[n]]."""
        p = self.by_latent_N
        return F.embedding_bag(
            self.rows_N[p], table_BD, self.offsets_F, mode="sum", per_sample_weights=weights_N[p]
        )

    def sampled_dot(self, a_BD: Tensor, b_FD: Tensor) -> Tensor:
        """[N]: entry n = a_BD[rows_N[n]] . b_FD[cols_N[n]] (a_BD b_FD^T at the entries only)."""
        if self.cols_N.numel() > SAMPLED_MAX_DENSITY * a_BD.shape[0] * self.d_sae:
            return (a_BD @ b_FD.T)[self.rows_N, self.cols_N]
        with warnings.catch_warnings():  # "CSR support is in beta": the op used here is tested
            warnings.simplefilter("ignore", UserWarning)
            pattern = torch.sparse_csr_tensor(
                self.crow_B1,
                self.cols_N,
                a_BD.new_zeros(self.cols_N.numel()),
                (self.crow_B1.numel() - 1, self.d_sae),
                check_invariants=False,
            )
        return torch.sparse.sampled_addmm(pattern, a_BD, b_FD.T).values()

    def dense(self, vals_N: Tensor) -> Tensor:
        """The dense [B, F] code (detached; for statistics and the step's output)."""
        out_BF = vals_N.new_zeros(self.crow_B1.numel() - 1, self.d_sae)
        return out_BF.index_put_((self.rows_N, self.cols_N), vals_N.detach())


class _SparseEncode(torch.autograd.Function):
    """The pre-activations at the active entries (computed densely by the caller, as the code's
    selection needs all of them), with the backward of x W_enc + b_enc over those entries."""

    @staticmethod
    def forward(
        ctx, pre_N: Tensor, x_BD: Tensor, W_enc_DF: Tensor, b_enc_F: Tensor, codes: SparseCodes
    ) -> Tensor:
        ctx.codes = codes
        ctx.save_for_backward(x_BD, W_enc_DF)
        return pre_N.detach().clone()

    @staticmethod
    def backward(ctx, grad_N: Tensor):
        x_BD, W_enc_DF = ctx.saved_tensors
        codes: SparseCodes = ctx.codes
        grad_x = grad_W = grad_b = None
        if ctx.needs_input_grad[1]:
            grad_x = codes.row_sums(grad_N, W_enc_DF.T.contiguous())
        if ctx.needs_input_grad[2]:
            grad_W = codes.latent_sums(grad_N, x_BD).T
        if ctx.needs_input_grad[3]:
            grad_b = grad_N.new_zeros(codes.d_sae).index_add_(0, codes.cols_N, grad_N)
        return None, grad_x, grad_W, grad_b, None


class _SparseDecode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, vals_N: Tensor, W_dec_FD: Tensor, codes: SparseCodes) -> Tensor:
        ctx.codes = codes
        ctx.save_for_backward(vals_N, W_dec_FD)
        return codes.row_sums(vals_N, W_dec_FD)

    @staticmethod
    def backward(ctx, grad_BD: Tensor):
        vals_N, W_dec_FD = ctx.saved_tensors
        codes: SparseCodes = ctx.codes
        grad_vals = grad_W = None
        if ctx.needs_input_grad[0]:
            grad_vals = codes.sampled_dot(grad_BD.contiguous(), W_dec_FD)
        if ctx.needs_input_grad[1]:
            grad_W = codes.latent_sums(vals_N, grad_BD.contiguous())
        return grad_vals, grad_W, None


def sparse_encode(
    pre_N: Tensor, x_BD: Tensor, W_enc_DF: Tensor, b_enc_F: Tensor, codes: SparseCodes
) -> Tensor:
    """pre_N (the values of x W_enc + b_enc at the code's entries, computed without gradient),
    differentiable in x, W_enc and b_enc as that expression is."""
    return _SparseEncode.apply(pre_N, x_BD, W_enc_DF, b_enc_F, codes)


def sparse_decode(vals_N: Tensor, W_dec_FD: Tensor, b_dec_D: Tensor, codes: SparseCodes) -> Tensor:
    """xhat_BD = z W_dec + b_dec for the code with values vals_N at `codes`' entries
    (differentiable in vals_N, W_dec_FD and b_dec_D)."""
    return _SparseDecode.apply(vals_N, W_dec_FD, codes) + b_dec_D


def topk_sparse(pre_BF: Tensor, k: int) -> tuple[Tensor, SparseCodes]:
    """The k largest pre-activations of each row (not yet ReLU'd) and where they are."""
    vals_BK, idx_BK = pre_BF.topk(k, dim=-1, sorted=False)
    B = pre_BF.shape[0]
    crow_B1 = torch.arange(0, (B + 1) * k, k, device=pre_BF.device)
    return vals_BK.flatten(), SparseCodes.build(crow_B1, idx_BK.flatten(), pre_BF.shape[-1])


def mask_sparse(pre_BF: Tensor, keep_BF: Tensor) -> tuple[Tensor, SparseCodes]:
    """The entries of pre_BF where keep_BF (a variable count per row) and where they are."""
    rows_N, cols_N = keep_BF.nonzero(as_tuple=True)  # row-major order
    counts_B = torch.bincount(rows_N, minlength=pre_BF.shape[0])
    crow_B1 = torch.cat([counts_B.new_zeros(1), counts_B.cumsum(0)])
    return pre_BF[rows_N, cols_N], SparseCodes.build(crow_B1, cols_N, pre_BF.shape[-1])
