"""Experiments built from the method, evals and analysis: the paper's runs for every seed, the
ambiguous readings and their sensitivity, the ground truth (`ground_truth/`), rounding."""
