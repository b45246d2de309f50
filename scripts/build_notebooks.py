"""Build the notebooks from their sources in `notebooks/src/` (one edit changes a shared cell
everywhere).

    python scripts/build_notebooks.py          write notebooks/*.ipynb from the sources
    python scripts/build_notebooks.py --check  exit 1 and name the notebooks whose cells differ
    python scripts/build_notebooks.py --outputs-from outputs/local/notebooks
                                               the same, with the outputs of a run's executed
                                               copies (how the committed notebooks get theirs;
                                               paths under the repository made relative)

Sources, in jupytext's percent format (`# %%` starts a code cell, `# %% [markdown]` a Markdown
cell whose lines are commented, `# %% parameters` the papermill parameters cell):

- `NN_name.py`: one notebook. Every notebook starts with the Colab badge and the Colab set-up cell
  (`_colab.py`); its parameters cell begins with `PARAMETERS_HEADER`.
- `NN_stageK_name.md`: an ablation-stage notebook (03-07), made from the one template `_stage.py`:
  a few `key: value` lines (`run`, `override_example`, optional `extra_cells`), `---`, then the
  notebook's title and introduction in Markdown.

After each parameters cell comes a generated cell that checks every parameter
(`hsae_utils.pipeline.params.check_parameters`), so a wrong papermill value fails before any work.

A cell whose source is unchanged keeps its outputs and execution count, so rebuilding never wipes
committed outputs.
"""
from __future__ import annotations

import argparse
import ast
import html
import json
import string
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hsae_utils.io import write_text_atomic  # noqa: E402
from hsae_utils.runs import ABLATIONS, MECHANISMS  # noqa: E402  (torch-free)

NOTEBOOKS = REPO / "notebooks"
SRC = NOTEBOOKS / "src"
BADGE = ("[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
         "(https://colab.research.google.com/github/hsae-reproduction/hierarchical-sae/blob/main/"
         "notebooks/{name}.ipynb)")
PARAMETERS_HEADER = 'import os\n\nprofile = os.environ.get("HSAE_PROFILE", "local")\n'
METADATA = {
    "accelerator": "GPU",
    "colab": {"gpuType": "T4", "provenance": []},
    "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
}


def parse_percent(text: str) -> list[dict]:
    """Cells of a percent-format script: {"cell_type", "source", "tags"}."""
    cells: list[dict] = []
    for line in text.split("\n"):
        if line.startswith("# %%"):
            marker = line[4:].strip()
            kind = "markdown" if marker == "[markdown]" else "code"
            tags = ["parameters"] if marker == "parameters" else []
            cells.append({"cell_type": kind, "lines": [], "tags": tags})
        elif cells:
            cells[-1]["lines"].append(line)
        elif line.strip():
            raise ValueError(f"text before the first '# %%' marker: {line!r}")
    out = []
    for cell in cells:
        lines = cell.pop("lines")
        if cell["cell_type"] == "markdown":
            lines = [line[2:] if line.startswith("# ") else line.lstrip("#") for line in lines]
        cell["source"] = "\n".join(lines).strip("\n")
        if "parameters" in cell["tags"]:
            cell["source"] = (PARAMETERS_HEADER + cell["source"]).strip("\n")
        out.append(cell)
    return out


def check_cell(parameters: str, run: str | None = None) -> dict:
    """The cell after a parameters cell (and after the parameters papermill injects): every
    parameter checked and converted by `hsae_utils.pipeline.params.check_parameters`, before any work."""
    names = [t.id for node in ast.parse(parameters).body if isinstance(node, ast.Assign)
             for t in node.targets if isinstance(t, ast.Name)]
    args = ", ".join([f"{n}={n}" for n in names] + ([f'run="{run}"'] if run else []))
    call = f"check_parameters({args})"
    lhs = f"({names[0]},)" if len(names) == 1 else ", ".join(names)
    if len(f"{lhs} = {call}") > 100:
        call = f"check_parameters(\n    {args})"
    return {"cell_type": "code", "tags": [],
            "source": f"from hsae_utils.pipeline.params import check_parameters\n\n{lhs} = {call}"}


def with_check_cell(cells: list[dict], run: str | None = None) -> list[dict]:
    out = []
    for cell in cells:
        out.append(cell)
        if "parameters" in cell["tags"]:
            out.append(check_cell(cell["source"], run))
    return out


# Notebook 02 trains every run (one pass per seed); the first stage notebook trains the five stages
# together if 02 has not, the others reuse their run (run_all.sh --force retrains them in 02).
TRAIN_ALL_STAGES = """# %% [markdown]
# Notebook 02 trained the five stages with the baselines, one pass over the cache per seed; the
# stages shared each gradient step until a mechanism acted (stages 1-3 share the loss of Eq. 3,
# stages 4-5 that of Eq. 6; resampling, window tracking and merging change the weights only through
# their events). Run alone, this notebook trains the five stages together in the same way
# (`experiments.train_runs`); each run ends bit-identical (CPU) to training it alone.

# %%
stage_runs = experiments.train_runs(P, [s.name for s in ABLATIONS] if not overrides else [RUN],
                                    overrides=overrides)
print(experiments.sharing_report(stage_runs))
runs = stage_runs[RUN]

"""
TRAIN_THIS_STAGE = """# %%
# Trained by notebook 02 with every run of its seed (one shared pass); trained here if missing.
runs = experiments.train_run(P, RUN, overrides=overrides)

"""


def stage_cells(path: Path) -> list[dict]:
    """The cells of an ablation-stage notebook: the template filled with the stage's values."""
    head, _, intro = path.read_text().partition("\n---\n")
    values = dict(line.split(": ", 1) for line in head.strip().split("\n"))
    stage = [spec.name for spec in ABLATIONS].index(values["run"]) + 1
    extra = values.get("extra_cells", "")
    template = string.Template((SRC / "_stage.py").read_text())
    text = template.substitute(
        intro="\n".join(f"# {line}".rstrip() for line in intro.strip("\n").split("\n")),
        run=values["run"], stage=stage, mechanisms=", ".join(MECHANISMS[:stage]),
        override_example=values["override_example"],
        train_cells=TRAIN_ALL_STAGES if stage == 1 else TRAIN_THIS_STAGE,
        extra_cells="".join(f"# %%\n{code}\n\n" for code in extra.split(" ;; ") if code))
    return with_check_cell(parse_percent(text), run=values["run"])


def notebook_cells(name: str) -> list[dict]:
    """Every cell of notebook `name` (e.g. "03_stage1_linear_sparsity"), from its sources."""
    stage_source = SRC / f"{name}.md"
    body = stage_cells(stage_source) if stage_source.exists() else with_check_cell(
        parse_percent((SRC / f"{name}.py").read_text()))
    return [{"cell_type": "markdown", "source": BADGE.format(name=name), "tags": []},
            {"cell_type": "code", "source": (SRC / "_colab.py").read_text().strip("\n"),
             "tags": []}, *body]


def notebook_names() -> list[str]:
    return sorted(p.stem for p in SRC.glob("[0-9][0-9]_*.*"))


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def build(name: str, existing: dict | None) -> dict:
    """The notebook JSON; cells whose type and source are unchanged keep their outputs."""
    old = {}
    for cell in (existing or {}).get("cells", []):
        old.setdefault((cell["cell_type"], "".join(cell["source"])), []).append(cell)
    cells = []
    for i, cell in enumerate(notebook_cells(name)):
        out = {"cell_type": cell["cell_type"], "id": f"cell-{i:02d}",
               "metadata": {"tags": cell["tags"]} if cell["tags"] else {},
               "source": _lines(cell["source"])}
        if cell["cell_type"] == "code":
            kept = (old.get(("code", cell["source"])) or [{}]).pop(0)
            out["execution_count"] = kept.get("execution_count")
            out["outputs"] = kept.get("outputs", [])
        cells.append(out)
    return {"cells": cells, "metadata": METADATA, "nbformat": 4, "nbformat_minor": 5}


def _widget_text(widgets: dict, model_id: str) -> str | None:
    """The final text of a tqdm progress-bar widget (an HBox of label, bar and counts), from the
    widget state papermill saves; None for any other widget."""
    box = widgets.get(model_id, {}).get("state", {})
    parts = []
    for child in box.get("children", []):
        st = widgets.get(child.removeprefix("IPY_MODEL_"), {}).get("state", {})
        if "max" in st:  # the bar
            n = int(10 * st.get("value", 0) / st["max"]) if st["max"] else 0
            parts.append("|" + "\u2588" * n + " " * (10 - n) + "|")
        else:
            parts.append(html.unescape(st.get("value", "")))
    return "".join(parts).strip() or None


def with_final_progress(nb: dict) -> dict:
    """Progress-bar widgets replaced by their final state as plain text: a saved notebook shows
    where each bar ended (its stored text fallback is the bar at 0 %), and no widget state."""
    widgets = (nb.get("metadata", {}).get("widgets", {})
               .get("application/vnd.jupyter.widget-state+json", {}).get("state", {}))
    for cell in nb.get("cells", []):
        outputs = []
        for out in cell.get("outputs", []):
            ref = out.get("data", {}).get("application/vnd.jupyter.widget-view+json")
            if ref is None:
                outputs.append(out)
            elif (text := _widget_text(widgets, ref.get("model_id", ""))) is not None:
                outputs.append({"output_type": "stream", "name": "stderr", "text": text + "\n"})
        cell["outputs"] = outputs
    return nb


def with_repo_relative_paths(nb: dict, root: Path = REPO) -> dict:
    """Paths under the repository `root` in text outputs written relative to it: a committed
    notebook shows `outputs/local/...`, not the folder of the machine that ran it."""
    prefix = str(root).rstrip("/") + "/"

    def fix(text):
        return [t.replace(prefix, "") for t in text] if isinstance(text, list) else text.replace(prefix, "")

    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []):
            if "text" in out:
                out["text"] = fix(out["text"])
            for kind in ("text/plain", "text/html", "text/markdown"):
                if kind in out.get("data", {}):
                    out["data"][kind] = fix(out["data"][kind])
            if "traceback" in out:
                out["traceback"] = fix(out["traceback"])
    return nb


def cell_sources(nb: dict) -> list[tuple[str, str, list[str]]]:
    """What must agree between a notebook and its sources: type, source and tags of each cell."""
    return [(c["cell_type"], "".join(c["source"]), c.get("metadata", {}).get("tags", []))
            for c in nb["cells"]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="only compare the notebooks' cells with their sources")
    parser.add_argument("--outputs-from", type=Path, metavar="DIR",
                        help="take each cell's outputs from the executed copy in DIR (a run's "
                             "outputs/<profile>/notebooks), progress bars at their final state, "
                             "paths relative to the repository")
    args = parser.parse_args(argv)
    stale = []
    for name in notebook_names():
        path = NOTEBOOKS / f"{name}.ipynb"
        existing = json.loads(path.read_text()) if path.exists() else None
        executed = args.outputs_from / f"{name}.ipynb" if args.outputs_from else None
        if executed is not None and executed.is_file():
            nb = build(name, with_repo_relative_paths(
                with_final_progress(json.loads(executed.read_text()))))
        else:
            nb = build(name, existing)
            if existing is not None and cell_sources(existing) == cell_sources(nb):
                continue
        stale.append(path.name)
        if not args.check:
            write_text_atomic(path, json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n")
    verb = "differ from their sources" if args.check else "written"
    print(f"{len(stale)} notebook(s) {verb}" + (f": {', '.join(stale)}" if stale else ""))
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
