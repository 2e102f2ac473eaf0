"""An mDNS eclipse on loopback (revsec2; real python-zeroconf bound to 127.0.0.1): a
LAN stranger that announces more services than a node tracks (`MAX_SERVICES`) kept
every honest newcomer out of its table ('over 1024 services; ignoring more'), and
services posing as members of an open swarm (its swarm id, fingerprint and protocol
are in every member's TXT record) took every neighbour place though nothing answered
at their addresses. Now a newcomer to a full table takes the place of a service that
is no peer, else of one whose address never answered a dial (`MdnsDiscovery.dialled`),
and a service whose address did not answer leaves `peers()` until its next try."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
import uuid
from collections.abc import Callable

import pytest
from zeroconf import DNSAddress, DNSOutgoing, DNSPointer, DNSService, DNSText, const
from zeroconf.asyncio import AsyncZeroconf

from declora.node import mdns_services
from declora.node.discovery import MdnsDiscovery, select_neighbors
from declora.node.mdns_services import SILENT_MOST, SILENT_SECONDS, Dials

LOOPBACK = "127.0.0.1"
FAKES = 1100  # more services than a node tracks (MAX_SERVICES, 1024)
MAX_NEIGHBORS = 8


def uid() -> str:
    return uuid.uuid4().hex[:10]


def node(label: str, swarm: str, port: int) -> MdnsDiscovery:
    return MdnsDiscovery(
        node_id=f"{label}-{uid()}",
        swarm_id=swarm,
        fingerprint="fp",
        protocol_version=1,
        advertise=f"{LOOPBACK}:{port}",
        interface=LOOPBACK,
        logger=logging.getLogger(f"declora.test.revsec2.{label}"),
    )


def txt(props: dict[str, str]) -> bytes:
    entries = [f"{k}={v}".encode() for k, v in props.items()]
    return b"".join(bytes([len(e)]) + e for e in entries)


async def announce(swarm: str, ids: list[str], addresses: list[str]) -> None:
    """The stranger: one mDNS answer per service (PTR, SRV, TXT, A) for node `ids` at
    `addresses`, in as few packets as fit, sent from its own zeroconf on 127.0.0.1."""
    zc = AsyncZeroconf(interfaces=[LOOPBACK])
    try:
        kind, ttl = mdns_services.SERVICE_TYPE, 120
        for start in range(0, len(ids), 8):
            out = DNSOutgoing(const._FLAGS_QR_RESPONSE | const._FLAGS_AA)
            for node_id, address in zip(
                ids[start : start + 8], addresses[start : start + 8], strict=True
            ):
                name = f"{node_id}.{kind}"
                host, port = address.rsplit(":", 1)
                server = f"{node_id}.local."
                props = {"node_id": node_id, "swarm_id": swarm, "proto": "1", "fp": "fp"}
                props["addr"] = address
                for record in (
                    DNSPointer(kind, const._TYPE_PTR, const._CLASS_IN, ttl, name),
                    DNSService(
                        name, const._TYPE_SRV, const._CLASS_IN, ttl, 0, 0, int(port), server
                    ),
                    DNSText(name, const._TYPE_TXT, const._CLASS_IN, ttl, txt(props)),
                    DNSAddress(server, const._TYPE_A, const._CLASS_IN, ttl, socket.inet_aton(host)),
                ):
                    out.add_answer_at_time(record, 0)
            zc.zeroconf.async_send(out)
            await asyncio.sleep(0.002)  # the loopback's socket buffer
    finally:
        await zc.async_close()


async def wait_for(what: str, cond: Callable[[], bool], seconds: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while not cond():
        assert loop.time() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def near(victim: str, count: int) -> list[str]:
    """`count` node ids nearer to `victim` on the neighbour ring than almost any other
    (`select_neighbors`): what a stranger grinds to take a node's neighbour places."""
    mine = int.from_bytes(hashlib.sha256(victim.encode()).digest(), "big")
    found: list[tuple[int, str]] = []
    for i in range(200 * count):
        cand = f"fake-{i}-{uid()[:4]}"
        d = int.from_bytes(hashlib.sha256(cand.encode()).digest(), "big") ^ mine
        found.append((d, cand))
    return [c for _, c in sorted(found)[:count]]


@pytest.fixture
def own_type(monkeypatch: pytest.MonkeyPatch) -> None:
    """A service type of this test's own: no other test's announcements count."""
    monkeypatch.setattr(mdns_services, "SERVICE_TYPE", f"_rs-{uid()[:8]}._tcp.local.")


@pytest.mark.usefixtures("own_type")
def test_a_full_table_of_strangers_keeps_no_newcomer_out() -> None:
    swarm = f"swarm-{uid()}"

    async def main() -> None:
        victim = node("victim", swarm, 17311)
        honest = node("honest", swarm, 17312)
        await victim.start()
        try:
            ids = [f"junk-{i}-{uid()[:6]}" for i in range(FAKES)]
            await announce(f"other-{uid()}", ids, [f"127.0.0.9:{20000 + i}" for i in range(FAKES)])
            await wait_for("the table to fill", lambda: len(victim._generation) >= 1000)
            await honest.start()
            # before: 'over 1024 services; ignoring more', and the newcomer never came
            await wait_for("the newcomer", lambda: honest.node_id in ids_of(victim))
            assert len(victim._generation) <= mdns_services.MAX_SERVICES
        finally:
            await asyncio.gather(victim.stop(), honest.stop())

    asyncio.run(main())


def ids_of(node: MdnsDiscovery) -> list[str]:
    return [p.node_id for p in node.peers()]


@pytest.mark.usefixtures("own_type")
def test_members_that_never_answer_take_no_neighbour_place_for_long() -> None:
    swarm = f"swarm-{uid()}"

    async def main() -> None:
        victim = node("victim", swarm, 17321)
        honest = node("honest", swarm, 17322)
        await asyncio.gather(victim.start(), honest.start())
        try:
            await wait_for("the honest node", lambda: honest.node_id in ids_of(victim))
            victim.dialled(honest.advertise, joined=True)  # the node's handshake with it
            fakes = near(victim.node_id, FAKES)
            # addresses where nothing answers
            await announce(swarm, fakes, [f"127.0.0.9:{20000 + i}" for i in range(FAKES)])
            await wait_for("the fakes", lambda: len(victim.peers()) >= 1000)
            assert honest.node_id in ids_of(victim)  # the table kept the member that joined
            chosen = [
                p.node_id for p in select_neighbors(victim.peers(), victim.node_id, MAX_NEIGHBORS)
            ]
            assert honest.node_id not in chosen  # the fakes are nearer on the ring
            # the handshaker dials the chosen ones (what `connect_known` does) and
            # tells discovery how each dial went; the fakes never answer
            dials = 0
            while honest.node_id not in chosen:
                for p in select_neighbors(victim.peers(), victim.node_id, MAX_NEIGHBORS):
                    victim.dialled(p.address, joined=p.node_id == honest.node_id)
                dials += 1
                assert dials <= FAKES // MAX_NEIGHBORS + 1, "the fakes keep every place"
                chosen = [
                    p.node_id
                    for p in select_neighbors(victim.peers(), victim.node_id, MAX_NEIGHBORS)
                ]
        finally:
            await asyncio.gather(victim.stop(), honest.stop())

    asyncio.run(main())


def test_silence_doubles_for_each_dial_in_a_row_and_a_join_ends_it() -> None:
    now = [0.0]
    dials = Dials(lambda: now[0])
    assert (dials.rank("a"), dials.silent("a")) == (1, False)  # never dialled
    waits = []
    for _ in range(8):
        dials.note("a", joined=False)
        start = now[0]
        while dials.silent("a"):
            now[0] += 30.0
        waits.append(now[0] - start)
    assert waits == [60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, SILENT_MOST, SILENT_MOST]
    assert dials.rank("a") == 0
    dials.note("a", joined=True)
    assert (dials.rank("a"), dials.silent("a")) == (2, False)
    dials.note("a", joined=False)  # counted afresh
    now[0] += SILENT_SECONDS + 1
    assert not dials.silent("a")
