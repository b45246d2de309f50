"""Evaluating SAEs, in the layout of SAEBench's `evals/<eval>/`.

- `cache`: the model-side cache (what the language model computes once per evaluation set)
- `adapter`: `SAEAdapter`, an SAE trained on normalized activations applied to raw ones
- `core`: reconstruction and sparsity metrics, and the splice (KL / CE with the SAE in the model)
- `absorption`: first-letter feature absorption
- `probing`: sparse probing (the method); `probing_tasks`: its labelled datasets
- `external`: SAELens-format SAEs (a folder or `release:sae_id`)
- `loading`: finding the SAEs to evaluate (`SAERun`, `find_saes`, `load_adapter`)
- `run`: the orchestration of notebook 08 (`evaluate_profile`, `EvaluationResult`,
  `save_results`)

Dependencies point one way: `run` -> the evaluations -> `adapter` / `cache`; no evaluation
imports `run` or another evaluation (`probing` reads its own `probing_tasks`).
"""

from hsae_utils.evals.adapter import SAEAdapter
from hsae_utils.evals.core import build_splice_data, reconstruction_metrics, splice_metrics
from hsae_utils.evals.loading import SAERun, external_runs, find_saes, load_adapter
from hsae_utils.evals.run import FAMILIES, EvaluationResult, evaluate_profile, save_results

__all__ = [
    "FAMILIES",
    "EvaluationResult",
    "SAEAdapter",
    "SAERun",
    "build_splice_data",
    "evaluate_profile",
    "external_runs",
    "find_saes",
    "load_adapter",
    "reconstruction_metrics",
    "save_results",
    "splice_metrics",
]
