"""hsae_utils: the HierarchicalSAE reproduction as a small library (the notebooks use the same).

    import hsae_utils as hs

    P = hs.get_profile("smoke")                # profiles: paper, local, smoke, colab, colab-gemma
    hs.cache_activations(P)                    # run the model once, cache the hooked layer
    result = hs.train_sae(P, "hierarchical")   # or "relu", "topk", "batchtopk"; stage=1..5
    report = hs.evaluate_saes(P, [result])     # core metrics, absorption, sparse probing
    print(report.summary())

Public names:
- profiles: `Profile`, `PROFILES`, `get_profile`
- SAEs: `ReLUSAE`, `TopKSAE`, `BatchTopKSAE`, `HierarchicalSAE` and their `...Config` classes,
  `config_from_profile`, `stage_switches`
- data: `load_model`, `cache_activations`, `ActivationStore`
- training: `train_sae` (one SAE), `train_run` (a run of the paper, every seed), `TrainConfig`
- files: `save_sae` / `load_sae` (SAELens folder layout), `load_sae_lens` (any SAELens SAE)
- evaluation: `evaluate_saes`, `EvaluationResult`
- features: `inspect_sae` (per-latent statistics + an HTML feature browser), `sae_stats`

Only the profiles are imported eagerly; everything else (torch, transformers) on first use.
The modules behind these names (`hsae_utils.method.train`, `hsae_utils.evals`, ...) hold the rest.
"""

from __future__ import annotations

import importlib
from typing import Any

from hsae_utils.config import PROFILES, Profile, get_profile

# public name -> module that defines it (imported on first access)
_LAZY = {
    **{
        name: ".method.saes"
        for name in (
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
        )
    },
    "load_model": ".data.model",
    "cache_activations": ".data.activations",
    "ActivationStore": ".data.activations",
    "TrainConfig": ".method.train",
    "train_sae": ".api",
    "evaluate_saes": ".api",
    "train_run": ".experiment.paper_runs",
    "save_sae": ".method.checkpoint",
    "load_sae": ".method.checkpoint",
    "load_sae_lens": ".evals.external",
    "EvaluationResult": ".evals",
    "inspect_sae": ".features.inspect",
    "sae_stats": ".features.inspect",
}

__all__ = ["PROFILES", "Profile", "get_profile", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
