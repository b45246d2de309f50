"""The package's shape, read from its source (AST, nothing imported): no import circle among
hsae_utils' modules, no import from a lower layer into a higher one, and docs/architecture.md
naming exactly the modules that exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from hsae_utils.config import REPO_ROOT

PACKAGE = REPO_ROOT / "hsae_utils"
# data < method < evals = features < analysis < experiment < pipeline; a module may import its
# own layer and the ones below. Top-level modules (config, runs, io, timing, api, __init__) are
# beside the layers.
LAYERS = {
    "data": 0,
    "method": 1,
    "evals": 2,
    "features": 2,
    "analysis": 3,
    "experiment": 4,
    "pipeline": 5,
}


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    return {
        module_name(p, root): p for p in sorted(root.rglob("*.py")) if "__pycache__" not in p.parts
    }


def imports(path: Path, name: str, known: dict[str, Path]) -> set[str]:
    """The package's modules that `path` imports, at module level or inside functions: `from a
    import b` names module a.b when that is a module, else a."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, one level up per extra dot
                anchor = name.split(".")[: len(name.split(".")) - node.level + is_package]
                base = ".".join(anchor + ([base] if base else []))
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            ]
        else:
            continue
        out |= {t for t in targets if t in known and t != name}
    return out


def graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    known = modules(root)
    return {name: imports(path, name, known) for name, path in known.items()}


def circles(edges: dict[str, set[str]], packages: set[str]) -> list[list[str]]:
    """Every import circle (one per strongly connected group), edges into a package's
    __init__ left out (importing a package to reach a name is how the layers are used)."""
    edges = {a: {b for b in bs if b not in packages} for a, bs in edges.items()}
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def layer(name: str) -> int | None:
    parts = name.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def upward(edges: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{a} (layer {parts_of(a)}) imports {b} (layer {parts_of(b)})"
        for a, bs in edges.items()
        for b in bs
        if layer(a) is not None and layer(b) is not None and layer(b) > layer(a)
    )


def parts_of(name: str) -> str:
    return name.split(".")[1]


def packages(root: Path = PACKAGE) -> set[str]:
    return {module_name(p, root) for p in root.rglob("__init__.py") if "__pycache__" not in p.parts}


def test_the_checks_find_a_circle_and_an_upward_import(tmp_path):
    root = tmp_path / "hsae_utils"
    files = {
        "__init__.py": "",
        "config.py": "",
        "data/__init__.py": "from hsae_utils.data.a import x\n",
        "data/a.py": "def f():\n    from . import b\n",  # function-level, relative
        "data/b.py": "from hsae_utils.data.a import f\nimport hsae_utils.config\n",
        "method/__init__.py": "",
        "method/m.py": "from hsae_utils.data import x\n",
        "evals/__init__.py": "",
        "evals/e.py": "from hsae_utils.method import m\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    edges = graph(root)
    assert edges["hsae_utils.data.b"] == {"hsae_utils.data.a", "hsae_utils.config"}
    assert edges["hsae_utils.method.m"] == {"hsae_utils.data"}  # a package: no circle edge
    assert circles(edges, packages(root)) == [["hsae_utils.data.a", "hsae_utils.data.b"]]
    assert upward(edges) == []
    (root / "data/b.py").write_text("from hsae_utils.evals.e import y\n")
    assert circles(graph(root), packages(root)) == []
    assert upward(graph(root)) == [
        "hsae_utils.data.b (layer data) imports hsae_utils.evals.e (layer evals)"
    ]


def test_no_import_circle_and_no_upward_import():
    edges = graph()
    assert circles(edges, packages()) == []
    assert upward(edges) == []


def documented(doc: str) -> set[str]:
    """Paths in backticks in the doc that name a module or folder of the package (relative to
    hsae_utils/), e.g. `data/model.py` or `method/saes/`."""
    return {
        m
        for m in re.findall(r"`([a-z_][\w/]*(?:\.py|/))`", doc)
        if not m.startswith(("hsae_utils/", "scripts/", "tests/", "notebooks/", "docs/"))
    }


def test_architecture_doc_names_every_module_and_no_other():
    doc = (REPO_ROOT / "docs" / "architecture.md").read_text()
    named = documented(doc)
    files = {
        p.relative_to(PACKAGE).as_posix()
        for p in PACKAGE.rglob("*.py")
        if "__pycache__" not in p.parts and (p.name != "__init__.py" or p.parent == PACKAGE)
    }
    assert sorted(files - named) == [], "modules docs/architecture.md does not name"
    assert sorted(n for n in named if not (PACKAGE / n).exists()) == [], (
        "docs/architecture.md names modules that do not exist"
    )
