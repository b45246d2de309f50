"""Every notebook agrees with its source in notebooks/src/ (cell types, sources and tags; outputs
and execution counts are ignored), and rebuilding keeps the outputs of unchanged cells."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from hsae_utils.config import REPO_ROOT

spec = importlib.util.spec_from_file_location(
    "build_notebooks", REPO_ROOT / "scripts" / "build_notebooks.py"
)
build_notebooks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build_notebooks)
NAMES = build_notebooks.notebook_names()


def test_every_notebook_has_a_source():
    assert sorted(p.stem for p in (REPO_ROOT / "notebooks").glob("*.ipynb")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_notebook_matches_its_source(name):
    on_disk = json.loads((REPO_ROOT / "notebooks" / f"{name}.ipynb").read_text())
    assert build_notebooks.cell_sources(on_disk) == build_notebooks.cell_sources(
        build_notebooks.build(name, None)
    ), (
        f"notebooks/{name}.ipynb differs from notebooks/src/: edit the source and run "
        "`python scripts/build_notebooks.py`"
    )


def test_shared_cells_come_from_one_place():
    cells = {name: build_notebooks.notebook_cells(name) for name in NAMES}
    colab = {c[1]["source"] for c in cells.values()}
    assert len(colab) == 1 and "set_up(REPO_DIR)" in colab.pop()
    stages = [n for n in NAMES if n[3:].startswith("stage")]
    assert len(stages) == 5
    for name in stages:  # each stage notebook names its run, and its overrides are checked on it
        code = "\n".join(c["source"] for c in cells[name] if c["cell_type"] == "code")
        assert f'RUN = "{name[3:]}"' in code
        assert f'run="{name[3:]}"' in code  # the generated check cell


def test_rebuild_keeps_outputs_of_unchanged_cells():
    name = NAMES[0]
    nb = build_notebooks.build(name, None)
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    code[-1]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["ok\n"]}]
    code[-1]["execution_count"] = 7
    code[-2]["source"] = ["# an edited cell\n"]
    code[-2]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["stale\n"]}]
    rebuilt = [c for c in build_notebooks.build(name, nb)["cells"] if c["cell_type"] == "code"]
    assert rebuilt[-1]["outputs"] == code[-1]["outputs"] and rebuilt[-1]["execution_count"] == 7
    assert rebuilt[-2]["outputs"] == [] and rebuilt[-2]["execution_count"] is None


def test_notebook_runs_name_real_runs_and_notebooks():
    from hsae_utils.runs import NOTEBOOK_RUNS, RUNS

    for notebook, names in NOTEBOOK_RUNS.items():
        assert notebook in NAMES, notebook
        assert all(n in RUNS or n == "sweep" for n in names), notebook
        if notebook[3:].startswith("stage"):  # a stage notebook trains the run it names; the
            # first trains all five stages in one shared pass
            source = (build_notebooks.SRC / f"{notebook}.py").read_text()
            assert build_notebooks.stage_run(source) == names[0], notebook
            assert len(names) == (5 if notebook.startswith("03_") else 1), notebook


def test_saved_progress_bars_show_their_final_state():
    """An executed notebook's tqdm widget (whose stored text is the bar at 0 %) becomes the text of
    its final widget state; other outputs are kept, the widget state itself is dropped."""
    ids = {"box": "b0", "left": "l0", "bar": "p0", "right": "r0"}
    state = {
        ids["box"]: {
            "state": {"children": [f"IPY_MODEL_{ids[k]}" for k in ("left", "bar", "right")]}
        },
        ids["left"]: {"state": {"value": "TopKSAE: 100%"}},
        ids["bar"]: {"state": {"value": 40, "max": 40}},
        ids["right"]: {"state": {"value": " 40/40 [00:07&lt;00:00]"}},
    }
    widget = {
        "output_type": "display_data",
        "metadata": {},
        "data": {
            "application/vnd.jupyter.widget-view+json": {"model_id": "b0"},
            "text/plain": "TopKSAE:   0%|          | 0/40",
        },
    }
    text = {"output_type": "stream", "name": "stdout", "text": "done\n"}
    nb = {
        "cells": [{"cell_type": "code", "source": "x", "outputs": [widget, text]}],
        "metadata": {"widgets": {"application/vnd.jupyter.widget-state+json": {"state": state}}},
    }
    outputs = build_notebooks.with_final_progress(nb)["cells"][0]["outputs"]
    assert outputs[0]["text"] == "TopKSAE: 100%|" + "\u2588" * 10 + "| 40/40 [00:07<00:00]\n"
    assert outputs[1] == text


def test_saved_outputs_show_paths_relative_to_the_repository():
    root = Path("/somewhere/repo")
    outputs = [
        {
            "output_type": "stream",
            "name": "stdout",
            "text": ["Outputs: /somewhere/repo/outputs/local/activations\n", "/elsewhere/x\n"],
        },
        {
            "output_type": "execute_result",
            "metadata": {},
            "data": {"text/plain": "[PosixPath('/somewhere/repo/figures/a.png')]"},
        },
        {"output_type": "error", "traceback": ["File /somewhere/repo/hsae_utils/io.py:3"]},
    ]
    nb = build_notebooks.with_repo_relative_paths({"cells": [{"outputs": outputs}]}, root)
    out = nb["cells"][0]["outputs"]
    assert out[0]["text"] == ["Outputs: outputs/local/activations\n", "/elsewhere/x\n"]
    assert out[1]["data"]["text/plain"] == "[PosixPath('figures/a.png')]"
    assert out[2]["traceback"] == ["File hsae_utils/io.py:3"]
