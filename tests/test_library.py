"""The library face: the README's "Use as a library" example runs as written (real model, smoke
profile, in a fresh interpreter), and `import hsae_utils` stays light."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

from hsae_utils.config import REPO_ROOT, get_profile


def readme_example() -> str:
    """The first python block of the README's "Use as a library" section."""
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## Use as a library", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_import_is_light_and_exports_the_api():
    code = (
        "import sys, hsae_utils as hs\n"
        "assert 'torch' not in sys.modules, 'import hsae_utils loaded torch'\n"
        "for name in hs.__all__: getattr(hs, name)\n"
        "from hsae_utils import evals\n"
        "from hsae_utils.method import train\n"
        "assert callable(hs.train_sae) and callable(hs.evaluate_saes)\n"
        "assert hasattr(evals, 'evaluate_profile') and hasattr(train, 'TrainConfig')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_readme_example_trains_and_evaluates_one_sae(tmp_path):
    code = readme_example()
    assert len([line for line in code.splitlines() if line.strip()]) <= 10
    corpus = get_profile("smoke").output_dir.parent / "corpus"
    if (corpus / "manifest.json").exists():  # the shared embedded corpus, copied, not rebuilt
        shutil.copytree(corpus, tmp_path / "corpus")
    env = {**os.environ, "HSAE_OUTPUT_ROOT": str(tmp_path), "TQDM_DISABLE": "1"}
    checks = (  # run after the example, in the same interpreter
        "\nrow = report.summary().loc['hierarchical']\n"
        "assert 0 < row['explained_variance_legacy'] <= 1 and row['l0'] > 0\n"
        "assert {'ce_loss_score', 'mean_absorption_fraction_score', 'sae_top_1_test_accuracy'}"
        " <= set(row.index)\n"
        "assert isinstance(sae, hs.HierarchicalSAE) and result.steps == P.train_steps\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code + checks],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    folder = tmp_path / "smoke" / "library" / "hierarchical_seed42"
    assert (folder / "cfg.json").exists() and (folder / "sae_weights.safetensors").exists()
    assert "hierarchical" in out.stdout and "ce_loss_score" in out.stdout
