"""`declora-node status` and `inspect` of a running node name its method and, for
DECA, the block training now (of how many, rounds left in its turn) and, for
Kill-and-Revive, the modules active (StatusReply.method, .deca, .kill_revive)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_daemon_parts import pair
from test_report_figures import reply

from declora.cli.client import render_status, status_to_dict
from declora.cli.inspect import render
from declora.node.deca import DecaNode
from declora.node.kill_revive import KillReviveNode
from declora.proto import pb


def status(parts: Any) -> pb.StatusReply:
    result: pb.StatusReply = asyncio.run(parts.status())
    return result


def test_status_names_the_default_method_and_no_block(synthetic_jsonl: Path) -> None:
    _, (a, _b) = pair(synthetic_jsonl)
    got = status(a)
    assert got.method == "dec-lora"
    assert not got.HasField("deca") and not got.HasField("kill_revive")
    as_json = status_to_dict(got)
    assert as_json["method"] == "dec-lora"
    assert as_json["deca"] is None and as_json["kill_revive"] is None


def test_deca_status_names_the_block_of_the_round_and_the_turn_left(
    synthetic_jsonl: Path,
) -> None:
    _, (a, _b) = pair(synthetic_jsonl, method="deca", deca_blocks=2, deca_block_rounds=3)
    assert isinstance(a.node, DecaNode)
    lm = a.node.deca.lm
    seen = []
    for completed in range(7):  # rounds 1..7: turns of 3 rounds, blocks by the schedule
        a.progress.round = completed
        got = status(a)
        assert got.method == "deca" and not got.HasField("kill_revive")
        turn_left = 3 - completed % 3
        assert (got.deca.block, got.deca.blocks, got.deca.rounds_left) == (
            lm.block_at(completed + 1) + 1,
            2,
            turn_left,
        )
        seen.append(got.deca.block)
    assert set(seen) == {1, 2}  # both blocks came round
    assert status_to_dict(got)["deca"] == {"block": seen[-1], "blocks": 2, "rounds_left": 3}


def test_kill_revive_status_counts_the_active_modules(synthetic_jsonl: Path) -> None:
    _, (a, _b) = pair(synthetic_jsonl, method="kill-revive")
    node = a.node
    assert isinstance(node, KillReviveNode)
    assert len(node.pairs) == 4
    node.active = np.array([True, False, False, False])
    got = status(a)
    assert got.method == "kill-revive" and not got.HasField("deca")
    assert (got.kill_revive.active_modules, got.kill_revive.modules) == (1, 4)
    node.begin_finish()  # the consensus finish sends every module
    assert status(a).kill_revive.active_modules == 4


@pytest.mark.parametrize(
    ("changes", "shown"),
    [
        ({"method": "dec-lora"}, "method dec-lora"),
        (
            {"method": "deca", "deca": pb.DecaStatus(block=2, blocks=4, rounds_left=3)},
            "method deca: block 2/4, 3 rounds left in its turn",
        ),
        (
            {"method": "deca", "deca": pb.DecaStatus(block=4, blocks=4, rounds_left=1)},
            "method deca: block 4/4, the last round of its turn",
        ),
        (
            {
                "method": "kill-revive",
                "kill_revive": pb.KillReviveStatus(active_modules=3, modules=24),
            },
            "method kill-revive: 3/24 modules active",
        ),
        (  # as is, bounded (the cut said)
            {"method": "[bold]x" * 30},
            "method " + ("[bold]x" * 30)[:40] + "... [170 more characters cut]",
        ),
    ],
)
def test_status_and_inspect_text_show_the_method(
    capsys: pytest.CaptureFixture[str], changes: dict[str, object], shown: str
) -> None:
    render_status(reply(**changes))
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == shown, lines  # after the state line
    render({"kind": "node", **status_to_dict(reply(**changes))})
    assert shown in capsys.readouterr().out.splitlines()


def test_status_text_of_a_node_that_does_not_name_its_method_says_nothing_of_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    render_status(reply())
    render({"kind": "node", **status_to_dict(reply())})
    assert "method" not in capsys.readouterr().out
