"""Every relative link in README.md and docs/*.md points at a file that exists and, for a
`#anchor`, at a heading of that file (GitHub's anchor names); the README stays a newcomer's
page (the quick start's two commands in its first 40 lines, under about 150 lines) and links
every docs/ page."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^[ \t]*(```|~~~).*?^[ \t]*\1[^\n]*$", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`]*`")
LINK = re.compile(r"\]\(\s*<?([^()\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")  # [text](target) and ![alt](target)
REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.M)  # [name]: target
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:


def _prose(text: str) -> str:
    """The text a reader sees as markdown: fenced blocks and code spans removed (no links in them)."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (code ticks and link
    targets too), spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return "".join(c for c in text if c.isalnum() or c in " _-").replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a page's headings, a repeated one numbered as GitHub numbers it (-1, -2)."""
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", page.read_text()).splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        base = slug(match.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(page: Path) -> list[str]:
    prose = _prose(page.read_text())
    return LINK.findall(prose) + REFERENCE.findall(prose)


def broken_links(page: Path) -> list[str]:
    """Each relative link of the page that points nowhere, with why."""
    broken = []
    for target in links(page):
        if SCHEME.match(target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_resolves(page):
    assert broken_links(page) == [], f"broken links in {page.relative_to(ROOT)}"


def test_a_broken_link_is_found(tmp_path):
    """The checker itself: a missing file, a missing heading, a multi-line link text and an image
    are caught; code, external links and good anchors are not."""
    (tmp_path / "other.md").write_text("# Other page\n\n## Disk: what a run keeps\n\n```\n# not a heading\n```\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n## GPU check (`scripts/gpu-check.sh`)\n\n"
        "[good](other.md#disk-what-a-run-keeps) [self](#gpu-check-scriptsgpu-checksh) "
        "[web](https://example.com/x.md#nowhere) `[in code](missing-in-code.md)`\n\n"
        "```\n[in a block](missing-in-block.md)\n```\n\n"
        "[a link whose text\nspans lines](missing.md) ![an image](shot.png)\n"
        "[bad anchor](other.md#not-a-heading) [bad self](#nowhere)\n")
    assert broken_links(page) == [
        f"missing.md: no file {tmp_path / 'missing.md'}",
        f"shot.png: no file {tmp_path / 'shot.png'}",
        "other.md#not-a-heading: no heading #not-a-heading in other.md",
        "#nowhere: no heading #nowhere in page.md",
    ]


def test_the_readme_is_a_first_hours_page_that_links_every_docs_page():
    readme = (ROOT / "README.md").read_text()
    head = "\n".join(readme.splitlines()[:40])
    assert "make run" in head and "make test" in head, "the quick start's two commands belong in the first 40 lines"
    assert len(readme.splitlines()) <= 150, "README.md is a newcomer's first hour: move detail to a docs/ page"
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in links(ROOT / "README.md") if not SCHEME.match(t)}
    orphans = [p.name for p in PAGES[1:] if p.resolve() not in linked]
    assert orphans == [], f"docs pages the README does not link: {orphans}"
