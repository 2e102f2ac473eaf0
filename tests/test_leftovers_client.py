"""`remote_text`: a node's string that ends in backslashes is shown as sent, before a
tag or not, and still cannot style the operator's terminal."""

from __future__ import annotations

import pytest
from rich.text import Text

from declora.cli.client import remote_text


def shown(markup: str) -> Text:
    return Text.from_markup(markup)


def styled(text: Text) -> list[tuple[int, int, str]]:
    """The styles that cover characters (an empty span styles none)."""
    return [(s.start, s.end, str(s.style)) for s in text.spans if s.end > s.start]


@pytest.mark.parametrize("sent", ["node\\", "node\\\\", "node\\\\\\", "\\", "[b\\"])
def test_trailing_backslashes_are_shown_as_sent(sent: str) -> None:
    """Before: "node\\" (one backslash) was shown "node\\\\" where no tag followed (a
    table cell, the end of a line), and three were taken as escaping a tag after them."""
    assert shown(remote_text(sent)).plain == sent
    bold = shown(f"[bold]{remote_text(sent)}[/] after")
    assert bold.plain == f"{sent} after"
    assert styled(bold) == [(0, len(sent), "bold")]


@pytest.mark.parametrize("sent", ["[red]x\\", "a\\[bold]b", "[/]\\"])
def test_markup_in_a_string_ending_in_a_backslash_stays_text(sent: str) -> None:
    """A guard: no markup of the node's applies, wherever its string stands."""
    assert shown(remote_text(sent)).plain == sent
    assert styled(shown(remote_text(sent))) == []
