"""`status` shows a node's planned rounds (opsleft): a node started with `--rounds
100000` said "round 3/100050" (the training exchanges plus the most the consensus
finish may mix, which a solo node never runs); now "round 3/100000" in text and
`total_rounds` 100000 in json, and in the finish the rounds past the plan apart.
Needs /tmp/opsleft-total-rounds.patch (node/daemon/parts.py) and
/tmp/opsleft-start-log.patch (start's log line of the rounds, node/daemon/daemon.py;
its finish named only where one runs: /tmp/revops3-plan-line.patch)."""

from __future__ import annotations

import json
import subprocess

import pytest
from daemon_helpers import CLI, Cluster, free_ports, train_args

from declora.cli.client import round_text

START = 150.0  # seconds for a node to import torch, build its model and serve


def test_the_finish_is_shown_apart_from_the_planned_rounds() -> None:
    assert round_text(30, 240, "training") == "round 30/240"
    assert round_text(262, 240, "consensus") == (
        "round 262 (240 planned + 22 of the consensus finish, which ends once the neighbours agree)"
    )
    assert round_text(7, 0, "training") == "round 7"  # until stopped


@pytest.mark.integration
@pytest.mark.slow  # a real node (~20 s on a loaded machine): make test-slow
def test_status_of_a_real_node_shows_its_planned_rounds(cluster: Cluster) -> None:
    (port,) = free_ports(1)
    run = ["--solo", "--rounds", "100000", "--eval-every", "0", "--consensus-rounds", "50"]
    node = cluster.add("n0", port, [*train_args(cluster.data), *run])
    node.start()
    cluster.wait_until("n0 past round 1", lambda: (s := node.status()) and s.round >= 1, START)
    status = [*CLI, "status", "--target", node.address]
    text = subprocess.run(status, capture_output=True, text=True, timeout=60)
    assert text.returncode == 0, text.stderr
    shown = json.loads(
        subprocess.run(
            [*status, "--format", "json"], capture_output=True, text=True, timeout=60
        ).stdout
    )
    assert shown["total_rounds"] == 100000, shown["total_rounds"]
    assert "/100000\n" in text.stdout and "100050" not in text.stdout, text.stdout
    said = "rounds: 100000 planned (--rounds 100000)"  # solo: no consensus finish
    assert said in node.log() and "consensus finish of" not in node.log(), node.tail()
