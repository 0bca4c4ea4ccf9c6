"""The README and docs/ point at files and sections that exist."""

import functools
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_LINK = re.compile(r"\]\(([^)\s]+)\)")


@functools.cache
def _anchors(page):
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def _links(page):
    return [link for link in _LINK.findall(page.read_text()) if not re.match(r"[a-z]+://", link)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    links = _links(page)
    assert links, f"{page.name} has no relative links"
    broken = []
    for link in links:
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists() or (anchor and target.suffix == ".md" and anchor not in _anchors(target)):
            broken.append(link)
    assert not broken, f"{page.name}: broken links {broken}"


def test_anchor_rule_matches_github():
    page = ROOT / "README.md"
    assert "the-quick-run-mnist_quick" in _anchors(page)
    assert "datalens-vs-the-paper-delta--1e-5" in _anchors(page)
