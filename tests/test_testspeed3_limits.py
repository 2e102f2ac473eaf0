"""test_limits.py's flood on two in-process daemons (torch loaded once), run by
`Daemon.run` as `start` runs one and served over real gRPC on 127.0.0.1
(`daemon_helpers.InProcess`), while the flood's raw gRPC client runs here: refused,
counted, logged at DEBUG, and the flooded node keeps mixing with its neighbour. The
`declora-node start` version: test_limits.py (make test-slow)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from daemon_helpers import HOST, InProcess, free_ports, node_settings, train_args
from test_limits import HANDSHAKES, PULLS, PUSHES, START, flood

from declora.node.trainer import LoraModel
from declora.proto import pb

SWARM = "limits"


@pytest.mark.timeout(360)
def test_flood_of_an_in_process_node_is_refused_counted_and_it_keeps_mixing(
    synthetic_jsonl: Path, tmp_path: Path, tiny_lm: LoraModel
) -> None:
    ports = free_ports(2)
    limits = f"--max-handshakes-per-minute {HANDSHAKES} --max-pushes-per-round {PUSHES} "
    limits += f"--max-pulls-per-minute {PULLS} --robust-mixing clip"
    run = "--rounds 0 --eval-every 0 --round-deadline 60 --min-peers -1 --startup-timeout 300"
    swarm = InProcess()
    try:
        a, b = (
            swarm.start(
                node_settings(
                    train_args(synthetic_jsonl) + run.split() + (limits.split() if i == 0 else []),
                    node_id=f"n{i}",
                    swarm_id=SWARM,
                    listen=f"{HOST}:{ports[i]}",
                    peers=[f"{HOST}:{ports[1 - i]}"],
                    partition=f"{i}/2",
                    checkpoint_dir=tmp_path / f"n{i}",
                )
            )
            for i in range(2)
        )

        def wait(what: str, check: Callable[[], pb.StatusReply | None]) -> pb.StatusReply:
            deadline = time.monotonic() + START
            while (reply := check()) is None:
                assert swarm.running(), f"a node stopped while waiting for {what}"
                if time.monotonic() > deadline:
                    pytest.fail(f"timed out waiting for {what}\n" + a.log()[-3000:])
                time.sleep(0.2)
            return reply

        flood(a, b, SWARM, wait, tiny_lm)
    finally:
        codes = swarm.close()
    assert codes == [0, 0], a.log()[-3000:]
