"""`inspect --target` shows a node's refusals by reason, as `status` does (opsvis):
before, its text named none (`--format json` had them)."""

from __future__ import annotations

import pytest

from declora.cli.client import render_status, status_to_dict
from declora.cli.inspect import render
from declora.proto import pb


def test_inspect_target_shows_the_refusals_status_shows(capsys: pytest.CaptureFixture[str]) -> None:
    reply = pb.StatusReply(node_id="n0", rejected={"request_timeout": 64, "waiting_room_cut": 6})
    render_status(reply)
    shown = capsys.readouterr().out
    render({"kind": "node", **status_to_dict(reply)})
    inspected = capsys.readouterr().out
    line = "refused: request_timeout 64, waiting_room_cut 6"
    assert line in shown
    assert line in inspected
