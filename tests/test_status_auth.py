"""`declora-node status` in text names who may connect to the node by the word
`--format json` has for it (StatusReply.auth): none, secret, mtls or mtls+secret (the
text said "open" where the JSON said "none")."""

from __future__ import annotations

import pytest
from test_report_figures import reply

from declora.cli.client import render_status, status_to_dict


@pytest.mark.parametrize(
    ("auth", "shown"),
    [
        ("none", "auth none"),
        ("secret", "auth secret"),
        ("mtls", "auth mtls"),
        ("mtls+secret", "auth mtls+secret"),
        ("[bold]x", "auth [bold]x"),  # one this CLI does not know: as is, not markup
    ],
)
def test_status_text_shows_the_auth_mode(
    capsys: pytest.CaptureFixture[str], auth: str, shown: str
) -> None:
    render_status(reply(auth=auth))
    out = capsys.readouterr().out
    [line] = [line for line in out.splitlines() if line.startswith("codec ")]
    assert line.endswith(f"  {shown}"), out
    assert len(line) <= 80, line
    assert status_to_dict(reply(auth=auth))["auth"] == auth  # the JSON's field


def test_status_text_without_an_auth_mode_says_nothing_of_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A node that does not say (an older one): no 'auth' at all, rather than a guess."""
    render_status(reply())
    assert "auth" not in capsys.readouterr().out
