"""`start`'s log line of its rounds (revops3's review of c744f89): a solo node, or one
with --consensus-rounds 0, runs no consensus finish, so its line names none (it said
"then a consensus finish of at most 50" on a --solo node). Used by the daemon with
/tmp/revops3-plan-line.patch (node/daemon/daemon.py)."""

from __future__ import annotations

import pytest

from declora.node.daemon.startup import plan_line
from declora.node.settings import load_settings

FINISH = ", then a consensus finish of at most 50 (--consensus-rounds; it ends once the "
PEERS = {"peers": "127.0.0.1:9"}


@pytest.mark.parametrize(
    ("options", "line"),
    [
        (PEERS, "rounds: 20 planned (--rounds 20)" + FINISH + "neighbours agree)"),
        ({"solo": True}, "rounds: 20 planned (--rounds 20)"),
        ({**PEERS, "consensus_rounds": 0}, "rounds: 20 planned (--rounds 20)"),
        ({**PEERS, "rounds": 0}, "rounds: until stopped (--rounds 0)"),
    ],
)
def test_the_plan_names_a_finish_only_where_one_runs(options: dict[str, object], line: str) -> None:
    settings = load_settings({"rounds": 20, "consensus_rounds": 50, **options})
    assert settings.exchanges_per_round == 1
    assert plan_line(settings) == line


@pytest.mark.parametrize(
    ("options", "most"),
    [(PEERS, 50), ({"solo": True}, 0), ({**PEERS, "rounds": 0}, 0)],
)
def test_status_says_the_most_the_finish_may_run(options: dict[str, object], most: int) -> None:
    """Status' `consensus_rounds` (JSON too): before, nothing said how long the finish
    past `total_rounds` may run."""
    from declora.cli.client import status_to_dict
    from declora.node.daemon.startup import finish_rounds
    from declora.proto import pb

    settings = load_settings({"rounds": 20, "consensus_rounds": 50, **options})
    reply = pb.StatusReply(total_rounds=20, consensus_rounds=finish_rounds(settings))
    assert status_to_dict(reply)["consensus_rounds"] == most
