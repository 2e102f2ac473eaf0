"""`declora-node status` shows `first_message.FirstMessage`'s refusals (opsvis; a real
node, real gRPC on 127.0.0.1, the real CLI): header-only calls past the waiting room,
the oldest cut at once (`waiting_room_cut`), the rest ended after `WAIT_SECONDS`
(`request_timeout`). Before, `status` counted neither."""

from __future__ import annotations

import asyncio
import json
import subprocess

import grpc
import pytest
from daemon_helpers import CLI, Cluster, free_ports, train_args

from declora.node.daemon.first_message import REQUEST_TIMEOUT, WAITING, WAITING_ROOM_CUT

START = 150.0  # seconds for a node to import torch, build its model and serve
HANDSHAKE = "/declora.v1.Swarm/Handshake"


async def stall(target: str, calls: int) -> list[str]:
    """`calls` Handshake calls to `target` that send headers and never a message, on two
    connections (each holds at most 64 calls); how the node ended them."""
    local = [("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.aio.insecure_channel(target, options=local) for _ in range(2)]
    try:
        held = [channels[i % 2].stream_unary(HANDSHAKE)() for i in range(calls)]
        return sorted({(await c.code()).name for c in held})
    finally:
        for channel in channels:
            await channel.close()


@pytest.mark.slow  # a real node (~20 s on a loaded machine): make test-slow
def test_status_shows_the_calls_the_node_cut_or_timed_out(cluster: Cluster) -> None:
    port, nobody = free_ports(2)
    run = ["--rounds", "0", "--eval-every", "0", "--swarm-id", cluster.swarm_id]
    node = cluster.add(
        "n0", port, [*train_args(cluster.data), *run, "--peers", f"127.0.0.1:{nobody}"]
    )
    node.start()
    cluster.wait_until("n0 answering", node.status, START, [node])
    # past the waiting room: the oldest are cut at once, the rest end after 10 s
    ended = asyncio.run(stall(node.address, WAITING + 6))
    assert ended == ["DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"]
    shown = subprocess.run(
        [*CLI, "status", "--target", node.address, "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    rejected = json.loads(shown.stdout)["rejected"]
    assert rejected.get(WAITING_ROOM_CUT) == 6, rejected
    assert rejected.get(REQUEST_TIMEOUT) == WAITING, rejected
    text = subprocess.run(
        [*CLI, "status", "--target", node.address], capture_output=True, text=True, timeout=60
    )
    assert f"{WAITING_ROOM_CUT} 6" in text.stdout, text.stdout
