"""Per-SAE host time of absorption and sparse probing, split into the probe fits, absorption's L1
probe and the rest (the bookkeeping), with the probes fitted by scikit-learn (the CPU path) and
by `evals.logreg` forced on the CPU (the CUDA path's code); and how far the two paths' scores
are apart on real SAEs. Reads a finished evaluation's caches (notebook 08 of the profile).

    python scripts/probe_fit_timing.py [--profile local] [--n-saes 6] [--json OUT]

The bookkeeping of the torch path is what stays on the host when the evaluation runs on CUDA
(`pipeline/resources.py`: LOCAL_BOOKKEEPING_S_PER_SAE).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from hsae_utils.config import get_profile
from hsae_utils.data.activations import ActivationStore
from hsae_utils.data.model import load_model, model_fingerprint
from hsae_utils.evals import absorption as ab
from hsae_utils.evals import probing as pr
from hsae_utils.evals.loading import find_saes, load_adapter
from hsae_utils.evals.run import eval_cache_root


class Clock:
    """Seconds spent inside wrapped functions, by label."""

    def __init__(self):
        self.t: dict[str, float] = {}

    def wrap(self, module, name: str, label: str):
        fn = getattr(module, name)

        def timed(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.t[label] = self.t.get(label, 0.0) + time.perf_counter() - t0

        setattr(module, name, timed)
        return fn


@contextmanager
def wrapped(clock: Clock):
    targets = [
        (ab, "train_l1_probe", "l1_probe"),
        (ab, "k_sparse_main_latents", "fits"),
        (ab, "k_sparse_main_latents_many", "fits"),
        (pr, "probe_accuracy", "fits"),
        (pr, "top_k_accuracies_torch", "fits"),
    ]
    originals = [(m, n, clock.wrap(m, n, label)) for m, n, label in targets]
    try:
        yield
    finally:
        for m, n, fn in originals:
            setattr(m, n, fn)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="local")
    ap.add_argument("--n-saes", type=int, default=6)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    P = get_profile(args.profile)
    torch.set_num_threads(1)
    model = load_model(P, device="cpu")
    root, fp = eval_cache_root(P), model_fingerprint(P)
    adata = ab.build_absorption_data(model, P, cache_root=root, fingerprint=fp, progress=False)
    pdata = pr.build_probing_data(model, P, cache_root=root, fingerprint=fp, progress=False)
    if not (adata.reused and pdata.reused):
        print("note: built the evaluation caches now (notebook 08 of this profile reuses them)")
    norm = ActivationStore(P.cache_dir / "validation").manifest["normalization"]
    runs = find_saes(P.sae_dir)[: args.n_saes]
    out = {"profile": P.name, "n_saes": len(runs), "per_sae": {}, "max_abs_score_diff": {}}
    for run in runs:
        adapter = load_adapter(run, "cpu", P, norm)
        (features,) = pr.sae_features_many([adapter], pdata)
        row = {}
        scores = {}
        for fit in ("sklearn", "torch"):
            clock = Clock()
            t0 = time.perf_counter()
            with wrapped(clock):
                a, _ = ab.evaluate_absorption(adapter, adata, seed=P.eval_seed, probe_fit=fit)
                p, _ = pr.evaluate_sparse_probing(
                    adapter, pdata, P.probe_k_values, features=features, probe_fit=fit
                )
            total = time.perf_counter() - t0
            fits, l1 = clock.t.get("fits", 0.0), clock.t.get("l1_probe", 0.0)
            row[fit] = {
                "total_s": total,
                "fits_s": fits,
                "l1_probe_s": l1,
                "bookkeeping_s": total - fits - l1,
            }
            scores[fit] = {**a, **p}
        for k, v in scores["sklearn"].items():
            w = scores["torch"][k]
            if isinstance(v, float) and not (math.isnan(v) and math.isnan(w)):
                d = abs(w - v)
                out["max_abs_score_diff"][k] = max(out["max_abs_score_diff"].get(k, 0.0), d)
        out["per_sae"][run.run] = row
        print(run.run, json.dumps(row))
    mean = lambda f, k: sum(r[f][k] for r in out["per_sae"].values()) / len(runs)  # noqa: E731
    out["mean"] = {
        f: {k: mean(f, k) for k in ("total_s", "fits_s", "l1_probe_s", "bookkeeping_s")}
        for f in ("sklearn", "torch")
    }
    print("mean per SAE:", json.dumps(out["mean"], indent=1))
    print("max |torch - sklearn| over the SAEs:", json.dumps(out["max_abs_score_diff"], indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
