"""Colab support: the profiles, the token-based choice, the pins, and the injected notebook cells
(an "Open in Colab" badge and a set-up cell that does nothing outside Colab)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hsae_utils import colab
from hsae_utils.config import REPO_ROOT, colab_profile_name, get_profile

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))


@pytest.fixture
def no_token(monkeypatch, tmp_path):
    """No token in the environment and none stored (huggingface_hub reads this path)."""
    import huggingface_hub.constants

    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(var, raising=False)
    token_file = tmp_path / "hf_token"
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(token_file))
    return token_file


def test_colab_profiles_fit_a_t4():
    small, gemma = get_profile("colab"), get_profile("colab-gemma")
    assert small.is_embedded and small.device == gemma.device == "auto"
    assert small.n_train_tokens > 10 * get_profile("local").n_train_tokens
    assert small.train_steps > get_profile("local").train_steps
    # the embedded corpus holds ~2.0M train tokens and ~105K validation tokens
    assert small.n_train_tokens < 2_000_000 and small.n_valid_tokens < 100_000
    assert gemma.model_name == "google/gemma-2-2b" and gemma.hook_name == "blocks.19.hook_resid_post"
    assert gemma.model_dtype == "float32"  # fp16 overflows in Gemma-2; no fast bf16 on a T4
    weights_gb = 2.61e9 * 4 / 1e9
    logits_gb = gemma.eval_batch_contexts * gemma.context_size * 256_000 * 4 / 1e9
    assert weights_gb + 4 * logits_gb < 15  # a few logit-sized copies next to the weights
    assert gemma.n_train_tokens * gemma.d_model * 4 / 1e9 < 12  # the cache on Colab's disk


def test_profile_choice_follows_the_hugging_face_token(no_token, monkeypatch):
    assert colab_profile_name() == "colab"
    monkeypatch.setenv("HF_TOKEN", "hf_example")
    assert colab_profile_name() == "colab-gemma"
    monkeypatch.delenv("HF_TOKEN")
    no_token.write_text("hf_stored_by_login\n")  # `hf auth login`
    assert colab_profile_name() == "colab-gemma"


def test_colab_requirements_are_the_locked_versions():
    lock = {}
    for line in (REPO_ROOT / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            lock[name.lower().replace("_", "-")] = version.strip()
    reqs = colab.requirements(REPO_ROOT)
    assert any(r.startswith("sae-lens==") for r in reqs) and any(r.startswith("torch==") for r in reqs)
    for req in reqs:
        name, version = req.split("==")
        assert lock[name.lower().replace("_", "-")] == version, req


def test_no_stale_modules_in_this_environment():
    import numpy  # noqa: F401
    import torch  # noqa: F401

    assert colab.stale_modules() == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_starts_with_badge_and_setup_cell(path):
    nb = json.loads(path.read_text())
    badge, setup = ("".join(c["source"]) for c in nb["cells"][:2])
    assert nb["cells"][0]["cell_type"] == "markdown" and "colab-badge.svg" in badge
    assert badge.rstrip(")").endswith(f"/blob/main/notebooks/{path.name}")
    assert nb["cells"][1]["cell_type"] == "code" and 'if "google.colab" in sys.modules:' in setup
    repo = badge.split("colab.research.google.com/github/")[1].split("/blob/")[0]
    assert f'"https://github.com/{repo}"' in setup  # badge and clone name the same repository
    tags = [c["metadata"].get("tags", []) for c in nb["cells"]]
    first_param = next(i for i, t in enumerate(tags) if "parameters" in t)
    assert first_param > 1  # papermill injects after the parameters cell, below the set-up


def test_setup_cell_does_nothing_outside_colab(tmp_path):
    """Run every notebook's set-up cell in a fresh interpreter: no output, no chdir, no profile."""
    cells = ["".join(json.loads(p.read_text())["cells"][1]["source"]) for p in NOTEBOOKS]
    assert len(set(cells)) == 1
    probe = (cells[0] + "\nimport os\nassert os.getcwd() == " + repr(str(tmp_path))
             + "\nassert 'HSAE_PROFILE' not in os.environ and 'hsae_utils' not in sys.modules\n")
    env = {k: v for k, v in os.environ.items() if k != "HSAE_PROFILE"}
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "" and out.stderr == ""
