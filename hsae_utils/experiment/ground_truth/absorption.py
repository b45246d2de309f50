"""Absorption measured exactly on a known hierarchy (what `sae_lens.synthetic` does not measure).

A child feature only fires with its parent. An SAE "absorbs" the parent into the child when the
latent that represents the parent stops firing on the child's tokens and the child's latent
carries the parent direction instead (Chanin et al. 2024, "A is for Absorption").

For each (parent, child) pair, with the parent latent = the latent whose decoder row is closest
(|cosine|) to the parent's true direction, and the child latent likewise:
    recall_alone   P(parent latent fires | parent active, none of its children active)
    recall_child   P(parent latent fires | this child active)  (the parent is active then too)
    absorption     max(0, recall_alone - recall_child): the recall the parent latent loses
                   exactly when the child is present. A dense code or a dead parent latent loses
                   nothing here (their failure shows in precision / recall / F1 instead).
    absorbed_by_child  on the child's tokens where the parent latent is silent, how often the
                   latent carrying most of the parent direction (max z_l x cos(W_dec_l, f_parent))
                   is the child's latent
    child_parent_cos   cos(decoder row of the child latent, parent direction)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class HierarchyPair:
    parent: int  # feature index
    child: int
    exclusive: bool  # the parent's children are mutually exclusive


def hierarchy_pairs(hierarchy) -> list[HierarchyPair]:
    """Every (parent feature, child feature) edge of a sae_lens Hierarchy."""
    pairs: list[HierarchyPair] = []

    def walk(node) -> None:
        for child in node.children:
            if node.feature_index is not None and child.feature_index is not None:
                pairs.append(
                    HierarchyPair(
                        node.feature_index,
                        child.feature_index,
                        bool(node.mutually_exclusive_children),
                    )
                )
            walk(child)

    for root in hierarchy.roots if hierarchy is not None else []:
        walk(root)
    return pairs


def _unit(x_ND: Tensor) -> Tensor:
    return x_ND / x_ND.norm(dim=-1, keepdim=True).clamp_min(1e-12)


@torch.no_grad()
def absorption_scores(
    z_NL: Tensor,
    W_dec_LD: Tensor,
    features_FD: Tensor,
    feats_NF: Tensor,
    pairs: list[HierarchyPair],
) -> list[dict]:
    """One row per pair (see the module docstring). z_NL: the SAE's codes of tokens whose true
    feature activations are feats_NF; W_dec_LD: its decoder; features_FD: the true directions."""
    if not pairs:
        raise ValueError(
            "No hierarchy pairs: build the synthetic world with a hierarchy "
            "(GroundTruthSetup.n_parents > 0)."
        )
    cos_LF = _unit(W_dec_LD.float()) @ _unit(features_FD.float()).T
    best_latent_F = cos_LF.abs().argmax(0)
    fires_NL, active_NF = z_NL != 0, feats_NF > 0
    children_of: dict[int, list[int]] = {}
    for p in pairs:
        children_of.setdefault(p.parent, []).append(p.child)
    rows = []
    for p in pairs:
        lp, lc = int(best_latent_F[p.parent]), int(best_latent_F[p.child])
        with_child = active_NF[:, p.child] & active_NF[:, p.parent]
        alone = active_NF[:, p.parent] & ~active_NF[:, children_of[p.parent]].any(1)
        recall_child = _mean(fires_NL[with_child, lp])
        recall_alone = _mean(fires_NL[alone, lp])
        if recall_alone != recall_alone or recall_child != recall_child:  # no tokens to measure
            recall_alone = recall_child = float("nan")
        missed = with_child & ~fires_NL[:, lp]
        # the latent that carries the parent direction on the tokens the parent latent missed
        carried_NL = z_NL[missed].float() * cos_LF[:, p.parent]
        absorber_N = carried_NL.argmax(1)
        rows.append(
            {
                "parent": p.parent,
                "child": p.child,
                "parent_latent": lp,
                "child_latent": lc,
                "n_child_tokens": int(with_child.sum()),
                "n_alone_tokens": int(alone.sum()),
                "recall_alone": recall_alone,
                "recall_child": recall_child,
                "absorption": (
                    max(0.0, recall_alone - recall_child)
                    if recall_alone == recall_alone
                    else float("nan")
                ),
                "absorbed_by_child": _mean(absorber_N == lc) if len(absorber_N) else float("nan"),
                "child_parent_cos": float(cos_LF[lc, p.parent]),
            }
        )
    return rows


def _mean(mask: Tensor) -> float:
    return float(mask.float().mean()) if mask.numel() else float("nan")
