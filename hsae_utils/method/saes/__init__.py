"""SAE architectures, one per file, each with its typed config dataclass.

relu.py          ReLUSAE          L1 baseline (lambda = 0.04)
topk.py          TopKSAE          Gao et al. 2024, AuxK
batchtopk.py     BatchTopKSAE     Bussmann et al. 2024, learned global threshold
hierarchical.py  HierarchicalSAE  the paper's method, one switch per mechanism
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hsae_utils.method.saes.base import BaseSAE, SAEConfig, StepOutput
from hsae_utils.method.saes.batchtopk import BatchTopKSAE, BatchTopKSAEConfig
from hsae_utils.method.saes.hierarchical import HierarchicalSAE, HierarchicalSAEConfig
from hsae_utils.method.saes.relu import ReLUSAE, ReLUSAEConfig
from hsae_utils.method.saes.topk import TopKSAE, TopKSAEConfig
from hsae_utils.method.stages import MECHANISMS, stage_switches

# Short names used by notebooks and scripts -> class.
ARCHITECTURES: dict[str, type[BaseSAE]] = {
    "relu": ReLUSAE,
    "topk": TopKSAE,
    "batchtopk": BatchTopKSAE,
    "hierarchical": HierarchicalSAE,
}
SAE_CLASSES: dict[str, type[BaseSAE]] = {cls.__name__: cls for cls in ARCHITECTURES.values()}


def config_from_profile(arch: str, profile, **overrides: Any) -> SAEConfig:
    """The config of architecture `arch` sized and scheduled by a `hsae_utils.config.Profile`.

    For "hierarchical", pass `**stage_switches(n)` to get ablation stage n.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture {arch!r}. Valid: {', '.join(ARCHITECTURES)}.")
    kw: dict[str, Any] = dict(
        d_in=profile.d_model,
        d_sae=profile.dict_size,
        hook_name=profile.hook_name,
        model_name=profile.model_name,
        dead_after_tokens=profile.window_size * profile.train_batch_size,
    )
    if arch in ("topk", "batchtopk"):
        kw["k"] = profile.topk_k
    if arch == "hierarchical":
        kw.update(
            window_size=profile.window_size,
            merge_every=profile.merge_every,
            resample_every=profile.resample_every,
        )
    config_class = ARCHITECTURES[arch].config_class
    valid = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ValueError(
            f"Unknown {config_class.__name__} field(s) {unknown}. "
            f"Valid fields: {', '.join(sorted(valid))}."
        )
    kw.update(overrides)
    return config_class(**kw)


__all__ = [
    "ARCHITECTURES",
    "SAE_CLASSES",
    "MECHANISMS",
    "BaseSAE",
    "SAEConfig",
    "StepOutput",
    "ReLUSAE",
    "ReLUSAEConfig",
    "TopKSAE",
    "TopKSAEConfig",
    "BatchTopKSAE",
    "BatchTopKSAEConfig",
    "HierarchicalSAE",
    "HierarchicalSAEConfig",
    "config_from_profile",
    "stage_switches",
]
