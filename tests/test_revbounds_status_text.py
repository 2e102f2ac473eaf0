"""`status` and `inspect` print what a node sends (its id, swarm, addresses, names,
its neighbours'): a hostile node cannot style or move the operator's terminal (rich
markup, escape sequences) nor flood it (`cli.client.remote_text`, `MAX_ROWS`)."""

from __future__ import annotations

import io
from unittest import mock

import pytest
from rich.console import Console

from declora.cli import client
from declora.cli.client import MAX_ROWS, render_status, status_to_dict
from declora.cli.inspect import render
from declora.proto import pb

EVIL = "[blink red]EVIL[/]\x1b]0;owned\x07\x1b[2J\u202e" + "A" * 5000


def hostile_reply(neighbours: int = 3) -> pb.StatusReply:
    r = pb.StatusReply(
        node_id=EVIL,
        swarm_id=EVIL,
        listen_address=EVIL,
        state=EVIL,
        codec=EVIL,
        method=EVIL,
        fingerprint=EVIL,
        package_version=EVIL,
        weighting=EVIL,
        auth=EVIL,
    )
    r.deca.block = r.deca.blocks = r.deca.rounds_left = 2**32 - 1
    for _ in range(neighbours):
        r.neighbors.add(node_id=EVIL, address=EVIL)
    r.rejected[EVIL] = 3
    r.last_eval[EVIL] = 1.0
    return r


def printed(show: object, color: bool = True) -> str:
    """What `show` (a callable) prints on a terminal (`color`: a colour one)."""
    buf = io.StringIO()
    colors = "truecolor" if color else None
    console = Console(file=buf, width=200, force_terminal=color, color_system=colors)
    with mock.patch.object(client, "report_console", lambda width=None, stderr=False: console):
        show()  # type: ignore[operator]
    return buf.getvalue()


@pytest.mark.parametrize(
    "show",
    [
        lambda: render_status(hostile_reply()),
        lambda: render({"kind": "node", **status_to_dict(hostile_reply())}),
    ],
    ids=["status", "inspect"],
)
def test_a_hostile_nodes_strings_are_escaped_and_bounded(show: object) -> None:
    out = printed(show)
    assert "\x1b]0;owned" not in out and "\x1b[2J" not in out and "\u202e" not in out
    assert "\\x1b]0;owned" in out  # shown escaped, not run
    assert "\x1b[5m" not in out  # [blink] was not applied: no blink attribute anywhere
    assert "more characters cut" in out
    assert len(out) < 20_000  # 14 strings of 5 kB each, shown about 100 characters each


def test_status_lists_at_most_max_rows_neighbours() -> None:
    out = printed(lambda: render_status(hostile_reply(MAX_ROWS + 5)), color=False)
    assert "... and 5 more neighbours (--format json lists all)" in out


@pytest.mark.parametrize("code", ["UNAUTHENTICATED", "UNKNOWN", "INTERNAL"])
def test_a_hostile_nodes_error_details_are_escaped_and_bounded(code: str) -> None:
    """`status` prints why a call failed on stderr, the node's details in it."""
    why, _hint = client.status_failure(code, EVIL, 5.0, False)
    assert "\x1b" not in why and "\u202e" not in why and "\x07" not in why
    assert len(why) < 600 and "more characters cut" in why
