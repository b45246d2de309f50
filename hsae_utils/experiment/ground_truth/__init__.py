"""Ground truth: the paper's SAEs trained on synthetic activations whose features are known.

data.py        the synthetic world (sae_lens.synthetic: feature dictionary, Zipfian firing,
               parent / mutually exclusive children, superposition) and an in-memory store
absorption.py  the direct absorption measure on the hierarchy (what sae_lens lacks)
experiment.py  train every configuration of Table 1 x seeds, evaluate, tables, verdict, figure
"""

from hsae_utils.experiment.ground_truth.absorption import (
    HierarchyPair,
    absorption_scores,
    hierarchy_pairs,
)
from hsae_utils.experiment.ground_truth.data import (
    GroundTruthSetup,
    SyntheticWorld,
    TensorStore,
    build_world,
    setup_for_profile,
)
from hsae_utils.experiment.ground_truth.experiment import (
    GT_CONFIGS,
    absorption_verdict,
    evaluate_sae,
    ground_truth_figure,
    run_ground_truth,
    summarize,
)

__all__ = [
    "GroundTruthSetup",
    "SyntheticWorld",
    "TensorStore",
    "build_world",
    "setup_for_profile",
    "HierarchyPair",
    "hierarchy_pairs",
    "absorption_scores",
    "GT_CONFIGS",
    "evaluate_sae",
    "run_ground_truth",
    "summarize",
    "absorption_verdict",
    "ground_truth_figure",
]
