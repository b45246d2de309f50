"""Build the notebooks from their sources in `notebooks/src/` (the Colab cell and the parameter
checks are generated, so they are the same everywhere).

    python scripts/build_notebooks.py          write notebooks/*.ipynb from the sources
    python scripts/build_notebooks.py --check  exit 1 and name the notebooks whose cells differ
    python scripts/build_notebooks.py --outputs-from outputs/local/notebooks
                                               the same, with the outputs of a run's executed
                                               copies (how the committed notebooks get theirs;
                                               paths under the repository made relative)

Sources, in jupytext's percent format (`# %%` starts a code cell, `# %% [markdown]` a Markdown
cell whose lines are commented, `# %% parameters` the papermill parameters cell):

`NN_name.py` is one notebook. Every notebook starts with the Colab badge and the Colab set-up
cell (`_colab.py`); its parameters cell begins with `PARAMETERS_HEADER`. (jupytext reads these
files too; this parser only needs the three markers.)

After each parameters cell comes a generated cell that checks every parameter
(`hsae_utils.pipeline.params.check_parameters`), so a wrong papermill value fails before any work;
in a stage notebook (03-07, a `RUN = "..."` line) `overrides` is checked against that run's config.

A cell whose source is unchanged keeps its outputs and execution count, so rebuilding never wipes
committed outputs.
"""

from __future__ import annotations

import argparse
import ast
import html
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hsae_utils.io import write_text_atomic  # noqa: E402

NOTEBOOKS = REPO / "notebooks"
SRC = NOTEBOOKS / "src"
BADGE = (
    "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
    "(https://colab.research.google.com/github/hsae-reproduction/hierarchical-sae/blob/main/"
    "notebooks/{name}.ipynb)"
)
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
    names = [
        t.id
        for node in ast.parse(parameters).body
        if isinstance(node, ast.Assign)
        for t in node.targets
        if isinstance(t, ast.Name)
    ]
    args = ", ".join([f"{n}={n}" for n in names] + ([f'run="{run}"'] if run else []))
    call = f"check_parameters({args})"
    lhs = f"({names[0]},)" if len(names) == 1 else ", ".join(names)
    if len(f"{lhs} = {call}") > 100:
        call = f"check_parameters(\n    {args})"
    return {
        "cell_type": "code",
        "tags": [],
        "source": f"from hsae_utils.pipeline.params import check_parameters\n\n{lhs} = {call}",
    }


def with_check_cell(cells: list[dict], run: str | None = None) -> list[dict]:
    out = []
    for cell in cells:
        out.append(cell)
        if "parameters" in cell["tags"]:
            out.append(check_cell(cell["source"], run))
    return out


def stage_run(source: str) -> str | None:
    """The run a stage notebook (03-07) trains, from its `RUN = "..."` line: the check cell
    validates `overrides` against that run's config."""
    match = re.search(r'^RUN = "([\w.-]+)"$', source, re.M)
    return match.group(1) if match else None


def notebook_cells(name: str) -> list[dict]:
    """Every cell of notebook `name` (e.g. "03_stage1_linear_sparsity"), from its source."""
    source = (SRC / f"{name}.py").read_text()
    body = with_check_cell(parse_percent(source), run=stage_run(source))
    return [
        {"cell_type": "markdown", "source": BADGE.format(name=name), "tags": []},
        {"cell_type": "code", "source": (SRC / "_colab.py").read_text().strip("\n"), "tags": []},
        *body,
    ]


def notebook_names() -> list[str]:
    return sorted(p.stem for p in SRC.glob("[0-9][0-9]_*.py"))


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def build(name: str, existing: dict | None) -> dict:
    """The notebook JSON; cells whose type and source are unchanged keep their outputs."""
    old = {}
    for cell in (existing or {}).get("cells", []):
        old.setdefault((cell["cell_type"], "".join(cell["source"])), []).append(cell)
    cells = []
    for i, cell in enumerate(notebook_cells(name)):
        out = {
            "cell_type": cell["cell_type"],
            "id": f"cell-{i:02d}",
            "metadata": {"tags": cell["tags"]} if cell["tags"] else {},
            "source": _lines(cell["source"]),
        }
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
    widgets = (
        nb.get("metadata", {})
        .get("widgets", {})
        .get("application/vnd.jupyter.widget-state+json", {})
        .get("state", {})
    )
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
        return (
            [t.replace(prefix, "") for t in text]
            if isinstance(text, list)
            else text.replace(prefix, "")
        )

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
    return [
        (c["cell_type"], "".join(c["source"]), c.get("metadata", {}).get("tags", []))
        for c in nb["cells"]
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="only compare the notebooks' cells with their sources"
    )
    parser.add_argument(
        "--outputs-from",
        type=Path,
        metavar="DIR",
        help="take each cell's outputs from the executed copy in DIR (a run's "
        "outputs/<profile>/notebooks), progress bars at their final state, "
        "paths relative to the repository",
    )
    args = parser.parse_args(argv)
    stale = []
    for name in notebook_names():
        path = NOTEBOOKS / f"{name}.ipynb"
        existing = json.loads(path.read_text()) if path.exists() else None
        executed = args.outputs_from / f"{name}.ipynb" if args.outputs_from else None
        if executed is not None and executed.is_file():
            nb = build(
                name,
                with_repo_relative_paths(with_final_progress(json.loads(executed.read_text()))),
            )
        else:
            nb = build(name, existing)
            if existing is not None and cell_sources(existing) == cell_sources(nb):
                continue
        stale.append(path.name)
        if not args.check:
            write_text_atomic(
                path, json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n"
            )
    verb = "differ from their sources" if args.check else "written"
    print(f"{len(stale)} notebook(s) {verb}" + (f": {', '.join(stale)}" if stale else ""))
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
