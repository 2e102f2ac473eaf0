"""A member that reads none of its Pulls keeps no other member's Pull out (secleft; a
real node, real gRPC on 127.0.0.1). The member joins (a handshake, its session) and
pulls from 127.0.0.2 on a connection that announces a stream window of 0 bytes
(`revsec2_h2.Stalled`): no byte of the state can reach it. Before, its Pulls took all 8
places of the Pull pool for 30 s each (honest Pulls refused '8 Pull calls already in
flight'), then held their places in gRPC's cap for good; now its network holds
`first_message.STREAMS_PER_NETWORK` streamed answers, the rest refused at once."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from daemon_helpers import Cluster, free_ports, train_args
from revsec2_h2 import Stalled
from test_attacks import ATTACKER_HOST, PULLS, Attacker, serve_attacker

from declora.node.daemon.first_message import STREAMS_PER_NETWORK
from declora.proto import pb

pytestmark = pytest.mark.slow  # a real node (~20 s on a loaded machine): make test-slow
START = 150.0  # seconds for the node to import torch, build its model and serve
PULL = "/declora.v1.Swarm/Pull"


def poll(what: str, check: Callable[[], bool], seconds: float = 20.0) -> None:
    end = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def victim(cluster: Cluster) -> Iterator[Any]:
    ports = free_ports(3)
    listens = [f"127.0.0.1:{p}" for p in ports[1:]]  # the attacker's server's (members')
    run = ["--rounds", "0", "--eval-every", "0", "--swarm-id", cluster.swarm_id]
    run += ["--peers", listens[0]]
    n0 = cluster.add("n0", ports[0], [*train_args(cluster.data), *run]).start()
    reply = cluster.wait_until("n0 answering", n0.status, START, [n0])
    server, _ = serve_attacker(ports[1:])
    attacker = Attacker(n0, cluster.swarm_id, reply.fingerprint)
    try:
        yield n0, attacker, listens
    finally:
        attacker.close()
        server.stop(grace=None)


def test_a_member_reading_none_of_its_pulls_keeps_no_pull_out(victim: Any) -> None:
    n0, attacker, listens = victim
    session = attacker.join("stalls", listens[0])
    request = pb.PullRequest(
        node_id="stalls",
        swarm_id=attacker.swarm_id,
        kind=pb.PAYLOAD_KIND_STATE,
        session=session,
        receiver_id=n0.node_id,
    )
    stalled = Stalled(n0.address, ATTACKER_HOST)
    try:
        for _ in range(PULLS):  # its address's allowance a minute
            stalled.call(PULL, request.SerializeToString())
        # before: only the 4 past the Pull pool (8) ended, the rest held for 30 s
        poll(
            "the Pulls past the member's share to end",
            lambda: len(stalled.ended()) == PULLS - STREAMS_PER_NETWORK,
        )
        honest = attacker.join("honest", listens[1])
        pulled = attacker.pull("honest", honest)
        assert pulled.code.name == "OK", pulled  # before: RESOURCE_EXHAUSTED
    finally:
        stalled.close()
