"""The documentation: README and docs/*.md link only to files and headings that exist, the
README stays short, and the generated blocks land where they belong (results in docs/results.md,
the findings in README.md, between their markers)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hsae_utils.config import REPO_ROOT

PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """`text` without its fenced code blocks and inline code (brackets there are not links)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for heading in re.findall(r"^#{1,6} (.+)$", prose(page.read_text()), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        out.add(slug)
    return out


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"[a-z]+:", target):  # https:, mailto: ...: not checked offline
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target} (no file {dest})")
        elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
            broken.append(f"{target} (no heading #{anchor} in {dest.name})")
    return broken


def test_the_link_checker_finds_a_broken_file_and_anchor(tmp_path):
    (tmp_path / "b.md").write_text("# Some heading, here\n")
    page = tmp_path / "a.md"
    page.write_text(
        "[ok](b.md#some-heading-here) [gone](c.md) [bad](b.md#nope) `[x](y.md)`\n"
        "```\n[code](z.md)\n```\n[self](#top)\n# Top\n"
    )
    assert broken_links(page) == [
        f"c.md (no file {tmp_path / 'c.md'})",
        "b.md#nope (no heading #nope in b.md)",
    ]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    assert broken_links(page) == []


def test_readme_is_short_and_every_docs_page_is_reachable_from_it():
    readme = (REPO_ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200, "README.md grew: move detail to a docs/ page"
    linked = {Path(t.partition("#")[0]).name for t in LINK.findall(readme)}
    assert {p.name for p in PAGES[1:]} <= linked


def test_generated_blocks_have_their_markers():
    assert "<!-- findings:local:start -->" in (REPO_ROOT / "README.md").read_text()
    assert "<!-- results:local:start -->" in (REPO_ROOT / "docs" / "results.md").read_text()
    assert "<!-- benchmark:start -->" in (REPO_ROOT / "docs" / "performance.md").read_text()


def test_update_readme_writes_findings_into_readme_and_results_into_their_page(
    tmp_path, monkeypatch, capsys
):
    from tests.test_claims import LOCAL, RESULTS, cl, update_readme

    figures = tmp_path / "figures"
    figures.mkdir()
    ur = update_readme(figures, monkeypatch)
    cl.write_claims(cl.claims_table(RESULTS, LOCAL), figures, "local")
    (figures / "fig1_core_metrics_local.png").write_bytes(b"png")
    readme, page = tmp_path / "README.md", tmp_path / "docs" / "results.md"
    page.parent.mkdir()
    readme.write_text(
        "intro\n<!-- findings:local:start -->\nold\n<!-- findings:local:end -->\nend\n"
    )
    page.write_text("head\n<!-- results:local:start -->\nold\n<!-- results:local:end -->\ntail\n")

    # the findings' own content is tested in tests/test_verdicts.py; here: where they go
    monkeypatch.setattr(
        ur, "findings_markdown", lambda p: f"HierarchicalSAE vs TopK: stand-in ({p})\n"
    )
    ur.update("local", readme=readme, results_page=page)
    assert readme.read_text() == (
        "intro\n<!-- findings:local:start -->\n"
        "HierarchicalSAE vs TopK: stand-in (local)\n"
        "<!-- findings:local:end -->\nend\n"
    )
    results = page.read_text()
    assert results.startswith("head\n") and results.endswith("<!-- results:local:end -->\ntail\n")
    # links from docs/ back to the figures folder
    assert "](../figures/fig1_core_metrics_local.png)" in results
    assert "](../figures/claims_local.md)" in results
    before = readme.read_text(), page.read_text()
    ur.update("smoke", readme=readme, results_page=page)  # no markers for smoke: nothing changes
    assert (readme.read_text(), page.read_text()) == before


def test_update_readme_lists_the_fragile_verdicts_from_the_claims_table(tmp_path, monkeypatch):
    from tests.test_claims import LOCAL, RESULTS, cl, update_readme

    ur = update_readme(tmp_path, monkeypatch)
    table = cl.claims_table(RESULTS, LOCAL)
    table["fragile"], table["fragile_reason"] = "robust", ""
    table.loc[table["id"] == "mse", ["fragile", "fragile_reason"]] = ["fragile", "flips: why"]
    table.loc[table["id"] == "t1_loss", "fragile"] = ""  # no verdict to move
    cl.write_claims(table, tmp_path, "local")
    page = tmp_path / "reproducibility.md"
    page.write_text("a\n<!-- fragile:local:start -->\nold\n<!-- fragile:local:end -->\nb\n")
    ur.update(
        "local",
        readme=tmp_path / "none.md",
        results_page=tmp_path / "none.md",
        reproducibility_page=page,
    )
    text = page.read_text()
    n = len(table) - 1
    assert f"1 of the {n} claims with measured verdicts" in text
    assert "- `mse` (mse): flips: why\n" in text and "old" not in text
    assert text.startswith("a\n") and text.endswith("<!-- fragile:local:end -->\nb\n")


def stale_names(page: Path) -> list[str]:
    """`hsae_utils/...` paths that do not exist and `hsae_utils.x.y` names whose module does not
    exist or does not mention the attribute after it (e.g. a module moved by a reorganisation)."""
    stale = []
    for name in re.findall(r"hsae_utils(?:[./][A-Za-z_]\w*)+(?:\.py|/)?", page.read_text()):
        if "/" in name:
            stale += [] if (REPO_ROOT / name).exists() else [name]
            continue
        parts = name.split(".")
        for i in range(len(parts), 0, -1):  # the longest prefix that is a module
            base = REPO_ROOT.joinpath(*parts[:i])
            source = (
                base.with_suffix(".py")
                if base.with_suffix(".py").exists()
                else base / "__init__.py"
            )
            if source.exists():
                break
        rest = parts[i:]
        if rest and not re.search(rf"\b{rest[0]}\b", source.read_text()):
            stale.append(name)
    return stale


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_docs_name_only_modules_that_exist(page):
    assert stale_names(page) == []


def test_the_stale_name_check_finds_a_moved_module(tmp_path):
    page = tmp_path / "a.md"
    page.write_text(
        "`hsae_utils/evaluate.py`, `hsae_utils/evals/core.py`, `hsae_utils.experiments`,\n"
        "`hsae_utils.pipeline.cli.PIPELINE_BUDGETS_MIN`, `hsae_utils.io.no_such_name`\n"
    )
    assert stale_names(page) == [
        "hsae_utils/evaluate.py",
        "hsae_utils.experiments",
        "hsae_utils.io.no_such_name",
    ]
