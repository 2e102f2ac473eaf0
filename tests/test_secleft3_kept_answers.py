"""A live neighbour's kept answer places are not part of the total (secleft3). Unread
answers from other networks (a stranger's, at 8 IPs: 4 streamed answers each, 8 unary
answers each from 4) held `first_message.STREAMS` (`UNREAD`) in all, and then every
live neighbour's Pull, push acknowledgement and Welcome was refused, its kept places
free: the total counted them too."""

from __future__ import annotations

import pytest
from daemon_helpers import Cluster
from revsec2_h2 import END_STREAM, HEADERS, Stalled
from test_attacks import Attacker
from test_secleft3_pulls import victim  # noqa: F401 (a fixture)

from declora.node.daemon import first_message as fm

CHECK = "/grpc.health.v1.Health/Check"


def filled(unread: fm.Unread, networks: int, each: int) -> fm.Unread:
    for i in range(networks):
        for _ in range(each):
            assert unread.refusal(f"10.0.{i}.1", answering=True) is None
            unread.take(f"10.0.{i}.1")
    return unread


def test_other_networks_cannot_take_a_live_neighbours_kept_stream() -> None:
    streams = filled(fm.Unread(fm.STREAMS, fm.STREAMS_PER_NETWORK), 8, fm.STREAMS_PER_NETWORK)
    assert streams.refusal("10.0.9.1", answering=True) is not None  # a stranger: full
    assert streams.refusal("127.0.0.1", answering=True, kept=True) is None  # before: full
    streams.take("127.0.0.1", kept=True)
    assert streams.refusal("10.0.9.1", answering=True) is not None  # still full
    streams.taken("127.0.0.1", kept=True)
    assert (streams.shared, fm.KEPT + "127.0.0.1" in streams.by_network) == (fm.STREAMS, False)


def test_other_networks_cannot_take_a_live_neighbours_kept_answer() -> None:
    unread = filled(fm.Unread(), 4, fm.UNREAD_PER_NETWORK)
    assert unread.refusal("127.0.0.1", answering=True, kept=True) is None  # before: full


@pytest.mark.integration
@pytest.mark.slow
def test_a_strangers_unread_answers_leave_a_live_neighbour_its_welcome(
    victim: tuple[Cluster, str],  # noqa: F811
) -> None:
    """A stranger at 4 loopback IPs holds 8 unread health Check answers at each (all
    of `UNREAD`); a live member at 127.0.0.1 renews its handshake meanwhile."""
    cluster, listen = victim
    a = cluster.nodes[0]
    status = a.status()
    assert status is not None
    member = Attacker(a, cluster.swarm_id, status.fingerprint)  # from 127.0.0.1
    member.join("h1", listen)
    stalled = [Stalled(a.address, f"127.0.0.{i}") for i in range(2, 6)]
    try:
        for conn in stalled:
            for _ in range(fm.UNREAD_PER_NETWORK):
                conn.call(CHECK)

        def held() -> int | None:  # every Check answered (its headers came) or ended
            heads = [[f for k, f, _ in c.frames if k == HEADERS] for c in stalled]
            counts = [len(h) for h in heads]
            if min(counts) < fm.UNREAD_PER_NETWORK:
                return None
            return sum(not f & END_STREAM for h in heads for f in h)

        unread = cluster.wait_until("the stranger's Checks answered", held, 30)
        renewed = member.handshake("h1", listen_address=listen)
        print(f"\n{unread} unread Check answers from 4 IPs; a live member's Hello: {renewed}")
        assert unread == fm.UNREAD and renewed.accepted, renewed  # before: RESOURCE_EXHAUSTED
    finally:
        for c in stalled:
            c.close()
        member.close()
