"""A swarm member holding the secret mints ids (node/daemon/admission.py, handshake.py):
the peers one remote host brings that are not in --peers hold at most `SLOTS_PER_HOST`
live slots (an IPv4 address, or an IPv6 /64; loopback exempt), so they cannot outvote
robust mixing or fill every slot, and a configured peer always finds room."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from memory_transport import MemoryNetwork, MemoryTransport
from test_daemon_parts import hello, settings

from declora.node.daemon import Daemon, handshake
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


def _served(net: MemoryNetwork, name: str, data: Path, advertise: str) -> Parts:
    """A node holding the secret, served on `net` at `advertise`."""
    s = settings(name, data, 1, [], swarm_secret=SECRET, advertise=advertise)
    parts = Daemon(s, MemoryTransport(net, s, None)).build()
    net.serve(advertise, SwarmService(parts))
    return parts


def test_a_redial_of_an_unlisted_peer_keeps_the_host_share(synthetic_jsonl: Path) -> None:
    """sybil0 and sybil1 join a from 10.0.0.2; sybil0 leaves, sybil2 takes its slot;
    a re-dials sybil0 (`due_for_dial`: an unproven one once). Before, the dial admitted
    it: 3 live from one host. Now the dial is held to the host's share."""
    net = MemoryNetwork()
    s = settings("a", synthetic_jsonl, 0, [], swarm_secret=SECRET)
    a = Daemon(s, MemoryTransport(net, s, None)).build()
    SwarmService(a)
    sybil = _served(net, "sybil0", synthetic_jsonl, "10.0.0.2:7500")
    w0 = a.handshaker.answer(
        sybil.auth.sign(sybil.handshaker.hello(receiver=s.advertise)), None, "ipv4:10.0.0.2:1"
    )
    assert w0.accepted, w0.reason
    assert join(a, "sybil1", "10.0.0.2:7501", "ipv4:10.0.0.2:40001").accepted
    gone = a.peers.get("sybil0")
    assert gone is not None
    a.peers.drop(gone, "left")
    assert join(a, "sybil2", "10.0.0.2:7502", "ipv4:10.0.0.2:40002").accepted
    assert [p.node_id for p in a.peers.due_for_dial(now=1e12)] == ["sybil0"]
    assert asyncio.run(a.handshaker.dial("10.0.0.2:7500", configured=False)) is None
    assert sorted(p.node_id for p in a.peers.live) == ["sybil1", "sybil2"]
    assert not sybil.peers.live  # told that a left again (the Leave after a refusal)


def test_a_dns_name_in_peers_is_not_borrowed_from_another_host(
    synthetic_jsonl: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--peers node3:7401 (docker-compose names). Before, Hellos claiming that address
    counted as configured from any host, under any number of ids: no host share, and
    each could evict an unlisted neighbour. Now the name counts only from the IPs it
    resolved to when a dialled it, and for one live id at a time."""
    a = node(synthetic_jsonl, ["node3:7401"])
    got = [join(a, f"sybil{i}", "node3:7401", "ipv4:10.0.0.9:40000") for i in range(5)]
    assert sum(w.accepted for w in got) == SLOTS_PER_HOST  # never resolved: vouches for none
    assert "10.0.0.9 already holds 2" in got[-1].reason
    assert "'node3:7401' is in its --peers, but another id holds it" in got[-1].reason

    net = MemoryNetwork()
    s = settings("a", synthetic_jsonl, 0, ["node3:7401"], swarm_secret=SECRET)
    a = Daemon(s, MemoryTransport(net, s, None)).build()
    SwarmService(a)
    b = _served(net, "node3", synthetic_jsonl, "node3:7401")
    resolved = frozenset({("10.0.3.1", 7401)})

    async def endpoints(address: str, timeout: float = 2.0) -> frozenset[tuple[str, int]]:
        return resolved if address == "node3:7401" else frozenset()

    monkeypatch.setattr(handshake, "endpoints", endpoints)
    assert asyncio.run(a.handshaker.dial("node3:7401", configured=True)) is not None
    assert a.handshaker.admission.resolved == {"node3:7401": frozenset({"10.0.3.1"})}
    # node3 is live: another id at its address, even from its host, is unlisted
    other = signed_hello(a, "node3-bis", "node3:7401")
    assert not a.handshaker.admission.configured(other, "10.0.3.1", s.peers)
    node3 = a.peers.get("node3")
    assert node3 is not None and b.peers.get("a") is not None
    a.peers.drop(node3, "left")
    n = a.settings.max_neighbors
    for i in range(n):
        assert join(a, f"honest{i}", f"10.0.{i}.1:7400", f"ipv4:10.0.{i}.1:4000").accepted
    for p in a.peers.live:
        p.proven = True
    borrowed = [join(a, f"sybil{i}", "node3:7401", "ipv4:10.9.9.9:40000") for i in range(n)]
    assert not any(w.accepted for w in borrowed)  # no eviction for a borrowed name
    assert sorted(p.node_id for p in a.peers.live) == [f"honest{i}" for i in range(n)]
    welcome = join(a, "node3", "node3:7401", "ipv4:10.0.3.1:40000")  # from its own IP
    assert welcome.accepted, welcome.reason
    live = [p.node_id for p in a.peers.live]
    assert "node3" in live and len(live) == n


def test_a_configured_address_counts_for_one_id_at_a_time(synthetic_jsonl: Path) -> None:
    """b joins at its --peers address; before, more ids from b's host claiming that
    address counted as configured too, each evicting an unlisted neighbour. Now the
    address is b's while b is live: they are unlisted, and find no room."""
    a = node(synthetic_jsonl, [HONEST])
    n = a.settings.max_neighbors
    for i in range(n - 1):
        assert join(a, f"lan{i}", f"10.0.{i + 2}.1:7400", f"ipv4:10.0.{i + 2}.1:4000").accepted
    for p in a.peers.live:
        p.proven = True
    assert join(a, "b", HONEST, "ipv4:10.0.1.1:40000").accepted
    more = [join(a, f"b{i}", HONEST, "ipv4:10.0.1.1:40000") for i in range(3)]
    assert not any(w.accepted for w in more)
    assert sorted(p.node_id for p in a.peers.live) == sorted(
        ["b", *(f"lan{i}" for i in range(n - 1))]
    )
