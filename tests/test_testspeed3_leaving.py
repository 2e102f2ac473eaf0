"""test_daemon.py's neighbour-leaving-during-a-push check on an in-process daemon
(torch loaded once), run by `Daemon.run` as `start` runs one, its pushes over real
gRPC to test_daemon.py's `LeavingPeer`: dropping the neighbour closes its channel while
the push to it is in flight (a cancelled grpc.aio call raises CancelledError, which
once ended the node); the node finishes its rounds, exit 0. The `declora-node start`
version: test_daemon.py (make test-slow)."""

from __future__ import annotations

from pathlib import Path

import pytest
from daemon_helpers import HOST, InProcess, free_ports, node_settings, serve_fake_peer, train_args
from test_daemon import RUN, START, LeavingPeer


@pytest.mark.timeout(360)
def test_a_neighbour_leaving_during_a_push_does_not_stop_an_in_process_node(
    synthetic_jsonl: Path, tmp_path: Path
) -> None:
    f_port, d_port = free_ports(2)
    fake = LeavingPeer(f"{HOST}:{f_port}")
    server = serve_fake_peer(fake, fake.address)
    swarm = InProcess()
    try:
        flags = [*train_args(synthetic_jsonl), "--rounds", "3", "--eval-every", "0"]
        node = swarm.start(
            node_settings(
                [*flags, "--round-deadline", "30"],
                node_id="d",
                swarm_id="leaving",
                listen=f"{HOST}:{d_port}",
                peers=[fake.address],
                checkpoint_dir=tmp_path / "d",
            )
        )
        code = swarm.wait_exit(node, START + RUN)
    finally:
        server.stop(grace=None)
        swarm.close()
    log = node.log()
    assert fake.left.is_set(), log[-3000:]
    assert "neighbour leaver left the live set: it left after round 3" in log, log[-3000:]
    assert "every neighbour has finished" in log, log[-3000:]  # no wait for it
    assert code == 0, log[-3000:]
    assert "round 3 done" in log and "Traceback" not in log, log[-3000:]
