"""The front page and the docs pages: every relative link and image resolves inside the
repository (anchors included), nothing points outside it, and the front page stays a front page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from harness import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    heads = [line.lstrip("#").strip() for line in page.read_text().splitlines() if line.startswith("#")]
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in heads}


def links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # not the code blocks
    return LINK.findall(text)


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_every_relative_link_and_image_resolves_inside_the_repository(page):
    broken = []
    for target in links(page):
        if re.match(r"^[a-z]+://", target) or target.startswith("mailto:"):
            continue
        path, _, anchor = target.partition("#")
        where = (page.parent / path).resolve() if path else page
        if not where.is_relative_to(REPO):
            broken.append(f"{target}: outside the repository")
        elif not where.exists():
            broken.append(f"{target}: no such file")
        elif anchor and where.suffix == ".md" and anchor not in anchors(where):
            broken.append(f"{target}: no such heading")
    assert broken == [], broken


def test_the_link_checker_finds_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n[ok](#title) [bad](missing.png) ![img](other.md#nowhere)\n```\n[in code](ignored)\n```\n")
    assert links(page) == ["#title", "missing.png", "other.md#nowhere"]
    assert anchors(page) == {"title"}


def test_the_front_page_is_short_and_points_nowhere_outside():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) < 200
    assert readme.startswith("# nin") and "make run" in readme.splitlines()[3] and "make test" in readme.splitlines()[4]
    for page in PAGES:
        assert "../shared" not in page.read_text(), page
        assert "nin-cli[" not in page.read_text(), page  # the package is not published: extras install from the checkout


def test_no_install_hint_names_an_unpublished_package():
    """Config comments, docstrings and messages name what works from a checkout: pip install -e '.[extra]'."""
    for path in [*(REPO / "conf").rglob("*.yaml"), *(REPO / "nin_cli").rglob("*.py"), *(REPO / "hydra_plugins").rglob("*.py")]:
        assert "nin-cli[" not in path.read_text(), path


def test_the_guides_layout_lists_every_module():
    """docs/guide.md's layout is `ls nin_cli/*/`: each folder's line names its modules, every one."""
    package = REPO / "nin_cli"
    block = (REPO / "docs" / "guide.md").read_text().split("```text\nnin_cli/\n", 1)[1].split("```", 1)[0]
    listed = {line.split()[0].rstrip("/"): set(line.split()[1:]) for line in block.splitlines() if line.split()[0].endswith("/")}
    folders = {p.name for p in package.iterdir() if p.is_dir() and any(p.glob("*.py")) and p.name != "assets"}
    assert set(listed) == folders
    for folder, named in listed.items():
        files = {p.name for p in (package / folder).iterdir() if p.suffix in (".py", ".c") and p.name != "__init__.py"}
        assert named == files, folder
    base = {p.name for p in package.glob("*.py")} - {"__init__.py", "__main__.py"}
    assert base <= set(block.splitlines()[0].split()), base
