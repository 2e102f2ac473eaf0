"""test_peer_logs.py's real-node flood check on an in-process daemon (torch loaded
once): a node with a swarm secret, served over real gRPC on 127.0.0.1, run and stopped
by `Daemon.run` as `start` runs it. A stranger without the secret pushes header-only
streams with random 900 kB swarm ids (the header is checked before any mac): every push
refused and counted, 20 lines logged in full, each a few hundred bytes, the rest summed
up in one line when the node stops. The `declora-node start` version:
test_peer_logs.py (make test-slow)."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import grpc
import pytest
from daemon_helpers import HOST, free_ports, node_settings, status_or_none, train_args
from test_peer_logs import header

from declora.node.daemon import Daemon
from declora.node.daemon.state import NodeState
from declora.node.daemon.transport import Transport
from declora.node.logs import REFUSALS_LOGGED
from declora.proto import pb, pb_grpc

SECRET = "s3cret-" + "x" * 32
PUSHES = 60


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.extend(record.getMessage().splitlines())


@pytest.mark.timeout(300)
def test_a_stranger_without_the_secret_cannot_flood_an_in_process_nodes_log(
    synthetic_jsonl: Path, tmp_path: Path
) -> None:
    closed, port = free_ports(2)
    address = f"{HOST}:{port}"
    s = node_settings(
        train_args(synthetic_jsonl),
        node_id="victim",
        swarm_id="flood",
        listen=address,
        peers=[f"{HOST}:{closed}"],
        checkpoint_dir=tmp_path / "victim",
        startup_timeout=600,
        swarm_secret=SECRET,
    )
    daemon = Daemon(s, Transport(s, None))
    seen = _Lines()
    logger = logging.getLogger("declora")
    logger.addHandler(seen)
    level = logger.level
    logger.setLevel(logging.INFO)

    async def go() -> tuple[int, set[grpc.StatusCode], list[str], int]:
        run = asyncio.create_task(daemon.run())
        while daemon.progress.state not in (NodeState.CONNECTING, NodeState.WAITING):  # built
            assert not run.done(), run.result()
            await asyncio.sleep(0.2)
        before = len(seen.lines)
        codes = set()
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.SwarmStub(channel)
            for _ in range(PUSHES):
                junk = os.urandom(8).hex() + "A" * 900_000
                try:
                    await stub.Push(iter([pb.Chunk(header=header(junk))]), timeout=30)
                except grpc.aio.AioRpcError as exc:
                    codes.add(exc.code())
                    assert len(exc.details() or "") < 300
        reply = await asyncio.to_thread(status_or_none, address, 10.0, None, SECRET)
        assert reply is not None and reply.rejected["wrong_swarm"] == PUSHES
        grown = seen.lines[before:]
        daemon.request_stop()
        return await run, codes, grown, before

    try:
        code, codes, grown, before = asyncio.run(go())
    finally:
        logger.removeHandler(seen)
        logger.setLevel(level)
    assert codes == {grpc.StatusCode.PERMISSION_DENIED}
    refusals = [line for line in grown if "is not this node's swarm" in line]
    assert len(refusals) == REFUSALS_LOGGED, grown[:20]
    assert sum(map(len, grown)) < REFUSALS_LOGGED * 500  # not 60 x 900 kB
    assert code == 0, seen.lines[-20:]
    summary = f"{PUSHES - REFUSALS_LOGGED} more refused messages (wrong_swarm) not logged"
    assert any(summary in line for line in seen.lines[before:]), seen.lines[-20:]
