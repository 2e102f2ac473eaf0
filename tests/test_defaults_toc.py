"""README's contents at the top link every `##` section, and every link there lands on a
heading (GitHub's anchors), so a renamed section cannot leave a dead link."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _contents() -> tuple[str, list[str]]:
    text = README.read_text(encoding="utf-8")  # its dashes and signs, whatever the locale
    intro = text.split("\n## ", 1)[0]
    assert "Contents" in intro, "README.md has no contents before its first section"
    return text, re.findall(r"\]\(#([^)]+)\)", intro.split("Contents", 1)[1])


def _headings(text: str, level: str = "#+") -> list[str]:
    inside = False
    out = []
    for line in text.splitlines():
        if line.startswith("```"):
            inside = not inside  # a '# comment' in a code block is no heading
        elif not inside and re.match(rf"{level} ", line):
            out.append(line.split(" ", 1)[1])
    return out


def test_every_link_of_the_contents_lands_on_a_heading() -> None:
    text, links = _contents()
    anchors = {_anchor(h) for h in _headings(text)}
    assert links and not [link for link in links if link not in anchors]


def test_the_contents_link_every_section() -> None:
    text, links = _contents()
    assert [h for h in _headings(text, "##") if _anchor(h) not in links] == []
