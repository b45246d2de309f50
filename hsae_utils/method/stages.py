"""The HierarchicalSAE's five mechanisms and the cumulative ablation of section 5.4: stage n
switches on the first n. Torch-free (the run registry reads it)."""

from __future__ import annotations

MECHANISMS = ("linear_sparsity", "resampling", "window_tracking", "adaptive_sparsity", "clustering")


def stage_switches(stage: int) -> dict[str, bool]:
    """Switches of ablation stage 0..5 (0 = none: a ReLU SAE with constant lambda_0)."""
    if not 0 <= stage <= len(MECHANISMS):
        raise ValueError(f"stage must be in 0..{len(MECHANISMS)}, got {stage}")
    return {name: i < stage for i, name in enumerate(MECHANISMS)}
