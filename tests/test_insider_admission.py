"""A swarm member holding the secret mints ids (node/daemon/admission.py, handshake.py):
the peers one remote host brings that are not in --peers hold at most `SLOTS_PER_HOST`
live slots (an IPv4 address, or an IPv6 /64; loopback exempt), so they cannot outvote
robust mixing or fill every slot, and a configured peer always finds room."""

from __future__ import annotations

from pathlib import Path

import pytest
from memory_transport import MemoryNetwork, MemoryTransport
from test_daemon_parts import hello, settings

from declora.node.daemon import Daemon
from declora.node.daemon.admission import SLOTS_PER_HOST, slot_key
from declora.node.daemon.daemon import Parts
from declora.node.daemon.service import SwarmService
from declora.proto import pb

SECRET = "insider-secret-insider-secret-0123"
HONEST = "10.0.1.1:7401"  # a's configured (--peers) neighbour


def node(data: Path, peers: list[str] | None = None) -> Parts:
    s = settings("a", data, 0, peers or [], swarm_secret=SECRET)
    d = Daemon(s, MemoryTransport(MemoryNetwork(), s, None))
    parts = d.build()
    SwarmService(parts)
    return parts


def signed_hello(a: Parts, node_id: str, listen: str) -> pb.Hello:
    """A Hello any holder of the secret can sign, under any id."""
    h = hello(
        node_id=node_id,
        swarm_id=a.settings.swarm_id,
        fingerprint=a.handshaker.fingerprint,
        listen_address=listen,
        receiver=a.settings.advertise,
    )
    return a.auth.sign(h)


def join(a: Parts, node_id: str, listen: str, peer: str) -> pb.Welcome:
    return a.handshaker.answer(signed_hello(a, node_id, listen), None, peer)


def test_one_host_holds_at_most_its_share_of_unlisted_slots(synthetic_jsonl: Path) -> None:
    a = node(synthetic_jsonl)
    got = [join(a, f"sybil{i}", f"10.0.0.2:{7500 + i}", "ipv4:10.0.0.2:40000") for i in range(7)]
    assert sum(w.accepted for w in got) == SLOTS_PER_HOST
    assert "10.0.0.2 already holds 2" in got[-1].reason and "--peers" in got[-1].reason
    # a live id renews from its host; a neighbouring address of the /24 is another host
    assert join(a, "sybil0", "10.0.0.2:7500", "ipv4:10.0.0.2:40001").accepted
    assert join(a, "lan", "10.0.0.3:7400", "ipv4:10.0.0.3:40000").accepted
    # one IPv6 /64 is one host
    v6 = [
        join(a, f"six{i}", f"[2001:db8::{i + 1}]:7400", f"ipv6:[2001:db8::{i + 1}]:40000")
        for i in range(3)
    ]
    assert [w.accepted for w in v6] == [True, True, False]
    assert len(a.peers.live) == 2 * SLOTS_PER_HOST + 1


def test_loopback_hosts_are_exempt(synthetic_jsonl: Path) -> None:
    """A one-machine lab (and every test) runs all nodes on 127.0.0.1."""
    a = node(synthetic_jsonl)
    got = [join(a, f"lab{i}", f"127.0.0.1:{7500 + i}", "ipv4:127.0.0.1:40000") for i in range(5)]
    assert all(w.accepted for w in got)


def test_a_configured_peer_always_finds_room(synthetic_jsonl: Path) -> None:
    """Unlisted ids from four hosts fill every slot and deliver (not silent): the
    configured neighbour still joins, in the slot of an unlisted one; its address
    borrowed by a Hello from another host counts as unlisted."""
    a = node(synthetic_jsonl, [HONEST])
    n = a.settings.max_neighbors
    for i in range(n):
        host = f"10.0.0.{2 + i // SLOTS_PER_HOST}"
        assert join(a, f"sybil{i}", f"{host}:{7500 + i}", f"ipv4:{host}:40000").accepted
    for p in a.peers.live:
        p.proven = True
    borrowed = join(a, "mallory", HONEST, "ipv4:10.0.0.2:40000")
    assert not borrowed.accepted
    welcome = join(a, "b", HONEST, "ipv4:10.0.1.1:40000")
    assert welcome.accepted, welcome.reason
    live = [p.node_id for p in a.peers.live]
    assert "b" in live and len(live) == n


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("10.0.0.5", "10.0.0.5"),
        ("::ffff:10.0.0.5", "10.0.0.5"),
        ("2001:db8::1", "2001:db8::/64"),
        ("127.0.0.2", None),
        ("::1", None),
        ("", None),
    ],
)
def test_slot_keys(host: str, key: str | None) -> None:
    assert slot_key(host) == key
