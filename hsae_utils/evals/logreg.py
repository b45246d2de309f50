"""Binary L2-regularised logistic regression in torch, many independent problems at once: the
probe fits of absorption (k-sparse probes, letters x k) and sparse probing (top-k probes,
datasets x classes x k) on the evaluation's device.

Objective: scikit-learn's `LogisticRegression(penalty="l2", C=C)` with the lbfgs solver, exactly,

    minimise  C * sum_i s_i * log(1 + exp(-y_i (x_i . w + b)))  +  ||w||^2 / 2,   y_i in {-1, 1},

the intercept b not penalised; s_i = 1, or with class_weight="balanced" n / (2 n_{class of i}).
sklearn scales it by 1 / (C sum_i s_i) and stops lbfgs when the largest gradient entry of that
scaled objective is below `tol` (1e-4); this module minimises the same function with Newton's
method (the Hessian is (p + 1) x (p + 1), p <= a few dozen features), a backtracking line search,
in float64, to a gradient 1e4 x smaller than sklearn's stop. The coefficients then sit closer to
the true minimum than sklearn's; they differ from sklearn's by sklearn's own stopping error
(tests/test_logreg.py states the tolerance), and predictions on held-out rows are identical
unless a margin falls within that error of 0.

Each problem stops on its own: once its gradient is below `tol` its parameters are frozen, so a
problem's result does not depend on the others fitted with it (batched = one by one, up to the
reduction order of the batched products). On the CPU the evaluation keeps scikit-learn (every
CPU number stays bit-identical); this path is for CUDA, or forced for tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

# sklearn's default tol is 1e-4 on the scaled gradient; we go well past it (see the docstring).
TOL = 1e-8
MAX_NEWTON = 100
MAX_HALVINGS = 40
ARMIJO = 1e-4
ROUNDING = 1e-13  # relative: a few hundred ulps of a float64 sum


@dataclass
class LogRegFit:
    """Fitted problems: coef [P, p], intercept [P], Newton iterations taken per problem, and
    whether each reached `tol`."""

    coef: Tensor
    intercept: Tensor
    n_iter: Tensor
    converged: Tensor

    def decision_function(self, X_PNp: Tensor) -> Tensor:
        """Scores x . w + b of rows X [P, N, p] (float64), as sklearn's decision_function."""
        X = X_PNp.to(self.coef.device, torch.float64)
        return torch.einsum("pnk,pk->pn", X, self.coef) + self.intercept[:, None]


def _objective(z: Tensor, y01: Tensor, s: Tensor, w: Tensor, C: float) -> Tensor:
    """C * sum s_i softplus(-y_i z_i) + ||w||^2 / 2 per problem (y in {0, 1}: log(1 + e^z) - y z)."""
    return C * (s * (torch.nn.functional.softplus(z) - y01 * z)).sum(-1) + 0.5 * (w * w).sum(-1)


def fit_logreg(
    X_PNp: Tensor,
    y_PN: Tensor,
    mask_PN: Tensor | None = None,
    C: float = 1.0,
    balanced: bool = False,
    tol: float = TOL,
    max_iter: int = MAX_NEWTON,
) -> LogRegFit:
    """Fit P independent binary problems: rows X [P, N, p], labels y [P, N] in {0, 1}, and an
    optional mask [P, N] (False: padding, weight 0) for problems with fewer than N rows.
    Runs on X's device in float64. Every problem needs both labels among its rows."""
    if X_PNp.ndim != 3 or y_PN.shape != X_PNp.shape[:2]:
        raise ValueError(
            f"fit_logreg wants X [problems, rows, features] and y [problems, rows]; got "
            f"{tuple(X_PNp.shape)} and {tuple(y_PN.shape)}: stack the problems (pad rows and "
            "pass mask_PN for problems of different sizes)."
        )
    device = X_PNp.device
    P, N, p = X_PNp.shape
    X = torch.cat([X_PNp.double(), X_PNp.new_ones(P, N, 1, dtype=torch.float64)], -1)
    y = y_PN.to(device, torch.float64)
    valid = (
        torch.ones(P, N, dtype=torch.float64, device=device)
        if mask_PN is None
        else mask_PN.to(device, torch.float64)
    )
    n_pos, n = (y * valid).sum(-1), valid.sum(-1)
    if bool(((n_pos == 0) | (n_pos == n)).any()):
        raise ValueError(
            "fit_logreg: a problem has rows of only one class (sklearn refuses it too): leave "
            "such problems out before fitting."
        )
    if balanced:  # sklearn's compute_class_weight("balanced"): n / (n_classes * count)
        s = valid * torch.where(y > 0, (n / (2 * n_pos))[:, None], (n / (2 * (n - n_pos)))[:, None])
    else:
        s = valid
    grad_scale = 1.0 / (C * s.sum(-1))  # sklearn's scaled objective, for the stopping rule
    penal = torch.ones(p + 1, dtype=torch.float64, device=device)
    penal[-1] = 0.0  # the intercept is not penalised
    theta = torch.zeros(P, p + 1, dtype=torch.float64, device=device)
    done = torch.zeros(P, dtype=torch.bool, device=device)
    n_iter = torch.zeros(P, dtype=torch.long, device=device)
    z = torch.zeros(P, N, dtype=torch.float64, device=device)
    obj = _objective(z, y, s, theta[:, :p], C)
    for _ in range(max_iter):
        sig = torch.sigmoid(z)
        grad = C * torch.einsum("pn,pnk->pk", s * (sig - y), X) + penal * theta
        done |= (grad.abs().amax(-1) * grad_scale) <= tol
        if bool(done.all()):  # one host sync per Newton step, not per row
            break
        H = C * ((s * sig * (1 - sig))[..., None] * X).transpose(1, 2) @ X
        H = H + torch.diag_embed(penal.expand(P, -1))
        step = torch.linalg.solve(H, grad)
        step = torch.where(done[:, None], torch.zeros_like(step), step)
        dz = torch.einsum("pnk,pk->pn", X, step)
        slope = (grad * step).sum(-1)  # > 0: H is positive definite
        t = torch.ones(P, dtype=torch.float64, device=device)
        accepted = done.clone()
        for _ in range(MAX_HALVINGS):
            z_new = z - t[:, None] * dz
            obj_new = _objective(z_new, y, s, theta[:, :p] - t[:, None] * step[:, :p], C)
            # Armijo, with the objective's rounding allowed: near the optimum the decrease of a
            # Newton step is below the sum's rounding error, and the full step is right there
            ok = obj_new <= obj - ARMIJO * t * slope + ROUNDING * obj.abs()
            accepted |= ok
            if bool(accepted.all()):
                break
            t = torch.where(accepted, t, t / 2)
        move = ~done
        t = torch.where(move, t, torch.zeros_like(t))
        theta = theta - t[:, None] * step
        z = torch.einsum("pnk,pk->pn", X, theta)  # recomputed: no drift over the steps
        obj = _objective(z, y, s, theta[:, :p], C)
        n_iter += move.long()
    return LogRegFit(theta[:, :p], theta[:, p], n_iter, done)


def resolve_probe_fit(probe_fit: str, device: torch.device | str) -> str:
    """How an evaluation fits its probes: "auto" -> "torch" on a CUDA device, else "sklearn"
    (every CPU result stays bit-identical to the sklearn path); other values checked."""
    if probe_fit not in ("auto", "sklearn", "torch"):
        raise ValueError(f"probe_fit must be 'auto', 'sklearn' or 'torch', not {probe_fit!r}.")
    if probe_fit == "auto":
        return "torch" if torch.device(device).type == "cuda" else "sklearn"
    return probe_fit


def f1_scores(pred_PN: Tensor, y_PN: Tensor, mask_PN: Tensor | None = None) -> Tensor:
    """Binary F1 per problem, sklearn's f1_score with zero_division=0: 2 TP / (2 TP + FP + FN)."""
    pred, y = pred_PN.bool(), y_PN.bool()
    m = torch.ones_like(y) if mask_PN is None else mask_PN.bool()
    tp = (pred & y & m).sum(-1).double()
    fp = (pred & ~y & m).sum(-1).double()
    fn = (~pred & y & m).sum(-1).double()
    den = 2 * tp + fp + fn
    return torch.where(den > 0, 2 * tp / den.clamp_min(1), torch.zeros_like(den))


def stack_padded(rows: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Problems of different row counts [N_i, ...] as one zero-padded tensor [P, max N, ...]
    and its mask [P, max N]."""
    n_max = max(r.shape[0] for r in rows)
    out = rows[0].new_zeros((len(rows), n_max, *rows[0].shape[1:]))
    mask = torch.zeros(len(rows), n_max, dtype=torch.bool, device=rows[0].device)
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r
        mask[i, : r.shape[0]] = True
    return out, mask
