"""The benchmark's lower bound of the local pipeline (scripts/benchmark.py, section 6b): its
FLOP counts against counts made by hand from SmolLM2's published sizes."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from hsae_utils.config import REPO_ROOT, get_profile

sys.path.insert(0, str(REPO_ROOT / "scripts"))  # benchmark.py imports bench_peers beside it
_spec = importlib.util.spec_from_file_location("benchmark", REPO_ROOT / "scripts" / "benchmark.py")
bm = sys.modules.setdefault("benchmark", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(bm)

REPORT = (
    "seed 42: 27 runs in one pass, 12,400 gradient steps computed for 13,500 (8% shared), 860 s\\n"
    "seed 43: 8 runs in one pass, 2,500 gradient steps computed for 4,000 (38% shared), 509 s\\n"
)


def test_computed_steps_read_the_sharing_report_else_count_every_step(tmp_path, monkeypatch):
    monkeypatch.setenv("HSAE_OUTPUT_ROOT", str(tmp_path))
    profile = get_profile("local")
    steps, how = bm.computed_steps(profile, "02_baselines.ipynb", runs=43)
    assert steps == 43 * profile.train_steps and "every run" in how
    folder = profile.output_dir / "notebooks"
    folder.mkdir(parents=True)
    (folder / "02_baselines.ipynb").write_text('{"text": "' + REPORT + '"}')
    steps, how = bm.computed_steps(profile, "02_baselines.ipynb", runs=43)
    assert steps == 12_400 + 2_500 and "02_baselines.ipynb" in how


def test_caching_and_training_flops_equal_a_count_by_hand(tmp_path, monkeypatch):
    """SmolLM2-135M: d 576, 9 query and 3 key-value heads of 64, MLP 1,536; 23 blocks up to
    layer 22 at 128 tokens per context."""
    from hsae_utils.data.model import cache_root

    if not (cache_root() / "models" / "SmolLM2-135M-Instruct-fp32" / "config.json").is_file():
        pytest.skip("the embedded model is not converted yet (scripts/setup.sh does it)")
    monkeypatch.setenv("HSAE_OUTPUT_ROOT", str(tmp_path))  # no notebooks: every step counted
    rows = {r["notebook"]: r["gflop"] for r in bm.pipeline_flops("local")}
    projections = 2 * 576 * (9 + 3 + 3) * 64 + 2 * 9 * 64 * 576
    block = projections + 3 * 2 * 576 * 1536 + 2 * 2 * 9 * 64 * (128 + 1) / 2
    assert rows["01"] == pytest.approx((131_072 + 16_384) * 23 * block / 1e9, rel=1e-12)
    n_sweep = 5 * 2 + 5 + 4 * 2  # TopK / BatchTopK k, L1 lambda, HierarchicalSAE and stage 1
    runs = 8 * 3 + n_sweep
    assert rows["02"] == pytest.approx(runs * 500 * 5 * 2 * 2048 * 576 * 576 / 1e9, rel=1e-12)
    assert rows["11"] > rows["12"] > 0 and set(rows) == {"01", "02", "08", "10", "11", "12"}
