"""A member with live ids at many IPs cannot fill the Pull pool (secleft3). The pool's
rule was per IP (an IP's first Pull took any free place): 8 ids at 8 loopback IPs, one
unread Pull each, held all 8 places of a node with `--max-neighbors 16`, and an honest
neighbour's catch-up Pull was refused RESOURCE_EXHAUSTED. Now the pool has a place for
every live neighbour and a Pull leaves one free for each other live id holding none
(`service.Pools.pull`). In-process here (the service's own checks on two daemons'
parts); against a real node with real gRPC on 127.0.0.2-9 in the slow test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_helpers import Cluster, free_ports
from revsec2_h2 import END_STREAM, HEADERS, Stalled
from test_attacks import HOST, START, Attacker, HostAlias, serve_attacker
from test_daemon_parts import pair
from test_secleft2_pulls import member, pulls

from declora.node.daemon import service
from declora.node.wire import WireError
from declora.proto import pb

IPS = [f"127.0.0.{i}" for i in range(2, 10)]  # the member's 8 IPs
PULL = "/declora.v1.Swarm/Pull"


def test_ids_at_eight_ips_leave_an_honest_neighbour_its_pull(synthetic_jsonl: Path) -> None:
    _, (_, b) = pair(synthetic_jsonl, max_neighbors=16)
    ids = [(ip, member(b, f"m{i}", ip)) for i, ip in enumerate(IPS)]
    honest = ("127.0.0.1", member(b, "n1", "127.0.0.1"))
    aborted, held = pulls(b, [*ids, *ids, honest])  # two Pulls an id, none read
    # before: the 8 first Pulls held the pool of 8 and the honest one was refused
    assert "127.0.0.1 RESOURCE_EXHAUSTED" not in aborted
    assert held == 16 and len(aborted) == 1  # one place per live neighbour: all taken


def test_a_pull_leaves_a_place_for_each_live_id_holding_none() -> None:
    """A guard of the rule itself: ids come in any order, at any IP."""
    pools = service.Pools(push_streams=4, per_host=16, pulls=3)
    live = ["m1", "m2", "n1"]
    with pools.pull("m1", live), pools.pull("m2", live):
        with pytest.raises(WireError), pools.pull("m1", live):
            pass
        with pools.pull("n1", live):
            assert pools.in_use["Pull"] == 3
    assert not pools.pull_ids


@pytest.fixture()
def victim(tmp_path: Path, synthetic_jsonl: Path) -> Iterator[tuple[Cluster, str]]:
    """n0 with `--max-neighbors 16` and its neighbour n1; the members' server."""
    cluster = Cluster(tmp_path, synthetic_jsonl)
    a, b = cluster.static(
        2, [(0, 1)], ["--rounds", "0", "--eval-every", "0", "--max-neighbors", "16"]
    )
    ports = free_ports(1)
    server, _ = serve_attacker(ports)
    try:
        a.start()
        b.start()
        cluster.wait_until("n0 answering", lambda: a.status(), START, [a, b])
        yield cluster, f"{HOST}:{ports[0]}"
    finally:
        cluster.close()
        server.stop(grace=None)


@pytest.mark.integration
@pytest.mark.slow
def test_ids_at_eight_ips_leave_a_real_node_s_honest_pull(victim: tuple[Cluster, str]) -> None:
    cluster, listen = victim
    a = cluster.nodes[0]
    status = a.status()
    assert status is not None
    relays = [HostAlias(a.address, ip) for ip in IPS]
    stalled = [Stalled(a.address, ip) for ip in IPS]
    try:
        for i, (relay, conn) in enumerate(zip(relays, stalled, strict=True)):
            att = Attacker(a, cluster.swarm_id, status.fingerprint, via=relay.address)
            session = att.join(f"m{i}", listen)
            request = pb.PullRequest(
                node_id=f"m{i}",
                swarm_id=cluster.swarm_id,
                kind=pb.PAYLOAD_KIND_STATE,
                session=session,
                receiver_id=a.node_id,
            )
            conn.call(PULL, request.SerializeToString())
            att.close()

        def answered() -> int | None:  # each Pull holds its place (headers) or ended
            heads = [{s: f for k, f, s in c.frames if k == HEADERS} for c in stalled]
            return sum(not h[1] & END_STREAM for h in heads) if all(1 in h for h in heads) else None

        held = cluster.wait_until("the 8 Pulls answered", answered, 30)
        honest = Attacker(a, cluster.swarm_id, status.fingerprint)  # from 127.0.0.1
        got = honest.pull("h1", honest.join("h1", listen))
        honest.close()
        print(f"\n8 ids at 8 IPs hold {held} unread Pulls; an honest Pull from 127.0.0.1: {got}")
        assert held == len(IPS) and got.code.name == "OK", got  # before: RESOURCE_EXHAUSTED
    finally:
        for c in stalled:
            c.close()
        for r in relays:
            r.close()
