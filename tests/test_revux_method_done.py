"""A node that is done (or stopping) names its method but no DECA block nor active
Kill-and-Revive modules: it trains none, and the block "of the next round" it showed
belonged to a round that never comes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from test_daemon_parts import pair

from declora.cli.client import method_text, status_to_dict
from declora.node.daemon.state import NodeState
from declora.proto import pb


@pytest.mark.parametrize("method", ["deca", "kill-revive"])
@pytest.mark.parametrize("state", [NodeState.DONE, NodeState.STOPPING])
def test_a_node_done_shows_no_block_or_modules(
    synthetic_jsonl: Path, method: str, state: NodeState
) -> None:
    _, (a, _b) = pair(synthetic_jsonl, method=method)
    a.progress.round = 5
    a.progress.state = state
    got: pb.StatusReply = asyncio.run(a.status())
    assert got.state == state.value and got.method == method
    assert not got.HasField("deca") and not got.HasField("kill_revive")
    assert method_text(status_to_dict(got)) == f"method {method}"


def test_a_training_deca_node_still_shows_its_block(synthetic_jsonl: Path) -> None:
    _, (a, _b) = pair(synthetic_jsonl, method="deca")
    a.progress.round = 1
    a.progress.state = NodeState.TRAINING
    got: pb.StatusReply = asyncio.run(a.status())
    assert got.HasField("deca") and got.deca.blocks >= 1
