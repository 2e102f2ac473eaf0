"""Advertised addresses no peer can dial (revsec5). A Hello or Welcome could state
0.0.0.0, [::], a multicast or the broadcast address as its listen address, and was
admitted: the node re-dialled it in vain (0.0.0.0: its own host). `check_hello`
refuses them (`address.dial_problem`) and names the fix; a node whose --advertise is
one (the image's --listen 0.0.0.0, --advertise unset) states none in its Hello, and a
peer that dialled it keeps the address it dialled. Link-local addresses pass: a LAN
without DHCP uses them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_helpers import Cluster
from test_attacks import Attacker
from test_daemon_parts import RULE, hello, pair
from test_secleft3_pulls import victim  # noqa: F401 (a fixture)

from declora.node.address import dial_problem
from declora.node.daemon.admission import check_hello

UNDIALABLE = [
    "0.0.0.0:7070",
    "[::]:7070",
    "[::ffff:0.0.0.0]:7070",
    "224.0.0.1:7070",
    "239.255.255.250:1900",
    "[ff02::1]:7070",
    "255.255.255.255:7070",
]
# link-local (a LAN without DHCP; a cloud's metadata service answers no gRPC), names
DIALABLE = ["169.254.10.20:7070", "169.254.169.254:80", "[fe80::1]:7070", "10.0.0.1:7070"]


@pytest.mark.parametrize("address", UNDIALABLE)
def test_a_hello_advertising_an_address_no_peer_can_dial_is_refused(address: str) -> None:
    got = check_hello(hello(listen_address=address), **RULE)  # type: ignore[arg-type]
    assert got.startswith(f"listen address {address!r} is ") and "no peer can dial" in got
    assert got.endswith("set --advertise to the address peers reach")


@pytest.mark.parametrize("address", [*DIALABLE, "", "node-a.lan:7070"])
def test_link_local_addresses_and_names_pass(address: str) -> None:
    assert dial_problem(address) == ""
    assert check_hello(hello(listen_address=address), **RULE) == ""  # type: ignore[arg-type]


def test_a_node_advertising_0_0_0_0_states_none_and_is_kept_at_its_dialled_address(
    synthetic_jsonl: Path,
) -> None:
    _, (a, b) = pair(synthetic_jsonl)
    served = a.settings.advertise  # where the in-memory network serves a
    a.settings.advertise = "0.0.0.0:" + served.rsplit(":", 1)[1]  # --listen 0.0.0.0, unset

    async def go() -> None:
        assert a.handshaker.hello().listen_address == ""
        peer = await b.handshaker.dial(served)  # a's Welcome states no address
        assert peer is not None and peer.address == served  # before: 0.0.0.0, refused
        assert await a.handshaker.dial(b.settings.advertise) is not None  # a's Hello too

    asyncio.run(go())
    held = b.peers.get("a")
    assert held is not None and held.live and held.address == served


@pytest.fixture()
def attacker(victim: tuple[Cluster, str]) -> Iterator[Attacker]:  # noqa: F811
    cluster, _ = victim
    a = cluster.nodes[0]
    status = a.status()
    assert status is not None
    member = Attacker(a, cluster.swarm_id, status.fingerprint)
    try:
        yield member
    finally:
        member.close()


@pytest.mark.integration
@pytest.mark.slow
def test_a_real_node_refuses_hellos_advertising_addresses_no_peer_can_dial(
    attacker: Attacker,
) -> None:
    for i, address in enumerate(UNDIALABLE):
        got = attacker.handshake(f"m{i}", listen_address=address)
        assert not got.accepted and "no peer can dial it" in got.details, (address, got)
