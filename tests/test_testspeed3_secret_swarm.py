"""test_security.py's secret swarm on in-process daemons (torch loaded once), run by
`Daemon.run` as `start` runs one and served over real gRPC on 127.0.0.1
(`daemon_helpers.InProcess`): s0 and s1 mix under the swarm secret, a node with
another secret is refused, forged, replayed and misdirected raw messages are refused
and counted, and the pair mixes on. The `declora-node start` version: test_security.py
(make test-slow)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from daemon_helpers import HOST, InProcess, free_ports, node_settings, train_args
from test_security import RUN_PAIR, SECRET, START, secret_swarm_checks

from declora.node.trainer import LoraModel

SWARM = "secret"


@pytest.mark.timeout(300)
def test_in_process_secret_swarm_mixes_and_refuses_forgeries_and_replays(
    synthetic_jsonl: Path, tmp_path: Path, tiny_lm: LoraModel
) -> None:
    ports = free_ports(3)
    peers = [[ports[1]], [ports[0]], [ports[0]]]  # the intruder dials s0
    secrets = [SECRET, SECRET, "not the swarm secret"]
    flags = train_args(synthetic_jsonl) + RUN_PAIR
    stranger = ["--startup-timeout", "600", "--log-level", "DEBUG"]  # test_security's
    swarm = InProcess()
    try:
        s0, s1, intruder = (
            swarm.start(
                node_settings(
                    flags if i < 2 else train_args(synthetic_jsonl) + stranger,
                    node_id=name,
                    swarm_id=SWARM,
                    listen=f"{HOST}:{ports[i]}",
                    peers=[f"{HOST}:{p}" for p in peers[i]],
                    checkpoint_dir=tmp_path / name,
                    swarm_secret=secrets[i],
                    **({"partition": f"{i}/2"} if i < 2 else {}),
                )
            )
            for i, name in enumerate(("s0", "s1", "wrong"))
        )

        def wait(what: str, check: Callable[[], object]) -> object:
            deadline = time.monotonic() + START
            while not (done := check()):
                assert swarm.running(), f"a node stopped while waiting for {what}"
                if time.monotonic() > deadline:
                    pytest.fail(f"timed out waiting for {what}\n" + s0.log()[-3000:])
                time.sleep(0.2)
            return done

        secret_swarm_checks(s0, s1, intruder, SWARM, wait, tiny_lm)
    finally:
        codes = swarm.close()
    assert codes == [0, 0, 0], s0.log()[-3000:]
