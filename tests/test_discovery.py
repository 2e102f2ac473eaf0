"""Peer discovery: real mDNS on loopback, static lists, neighbour selection.

The mDNS tests bind python-zeroconf to 127.0.0.1 and run several nodes in one process;
every test uses fresh swarm / node ids so concurrent runs on this machine ignore each
other. Nothing listens on the advertised ports: discovery only announces them.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import random
import uuid
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from zeroconf import NonUniqueNameException
from zeroconf.asyncio import AsyncZeroconf

from declora.node.discovery import (
    MdnsDiscovery,
    PeerInfo,
    StaticDiscovery,
    instance_name,
    select_neighbors,
)

pytestmark = pytest.mark.timeout(30)

LOOPBACK = "127.0.0.1"
DEADLINE = 10.0
LOG_NAME = "declora.test.discovery"


def uid() -> str:
    return uuid.uuid4().hex[:10]


def make_node(
    label: str,
    *,
    swarm: str,
    port: int,
    fingerprint: str = "fp-main",
    proto: int = 1,
    node_id: str = "",
) -> MdnsDiscovery:
    return MdnsDiscovery(
        node_id=node_id or f"{label}-{uid()}",
        swarm_id=swarm,
        fingerprint=fingerprint,
        protocol_version=proto,
        advertise=f"{LOOPBACK}:{port}",
        interface=LOOPBACK,
        logger=logging.getLogger(f"{LOG_NAME}.{label}"),
    )


def expected(node: MdnsDiscovery) -> PeerInfo:
    """The peer others find: what `node` announces (its TXT `properties`)."""
    txt = node.properties
    return PeerInfo(
        address=txt["addr"],
        node_id=txt["node_id"],
        swarm_id=txt["swarm_id"],
        fingerprint=txt["fp"],
        protocol_version=int(txt["proto"]),
    )


async def wait_for(cond: Callable[[], bool], what: Callable[[], str]) -> None:
    """Poll `cond` until it holds; fail with `what()` after DEADLINE seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while not cond():
        if loop.time() > deadline:
            pytest.fail(f"not within {DEADLINE:g} s: {what()}")
        await asyncio.sleep(0.05)


async def stop_all(nodes: Sequence[MdnsDiscovery]) -> None:
    await asyncio.gather(*(n.stop() for n in nodes))


# --------------------------------------------------------------------------- mDNS


def test_three_nodes_find_each_other_and_notice_a_departure() -> None:
    async def main() -> None:
        swarm = f"swarm-{uid()}"
        nodes = [make_node(f"n{i}", swarm=swarm, port=17101 + i) for i in range(3)]
        try:
            await asyncio.gather(*(n.start() for n in nodes))

            def want(i: int) -> list[PeerInfo]:
                return sorted(
                    (expected(m) for j, m in enumerate(nodes) if j != i), key=lambda p: p.node_id
                )

            await wait_for(
                lambda: all(n.peers() == want(i) for i, n in enumerate(nodes)),
                lambda: f"each node sees the other two: {[n.peers() for n in nodes]}",
            )
            for n in nodes:
                assert all(p.node_id != n.node_id for p in n.peers())

            await nodes[2].stop()
            assert nodes[2].peers() == []
            await wait_for(
                lambda: (
                    nodes[0].peers() == [expected(nodes[1])]
                    and nodes[1].peers() == [expected(nodes[0])]
                ),
                lambda: f"n2 disappears: {nodes[0].peers()} / {nodes[1].peers()}",
            )
        finally:
            await stop_all(nodes)

    asyncio.run(main())


def test_foreign_swarm_fingerprint_and_protocol_are_ignored_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOG_NAME)
    swarm, other = f"swarm-{uid()}", f"other-{uid()}"

    async def main() -> None:
        a = make_node("a", swarm=swarm, port=17201)
        ok = make_node("ok", swarm=swarm, port=17202)
        foreign = make_node("foreign", swarm=other, port=17203)
        fp = make_node("fp", swarm=swarm, port=17204, fingerprint="fp-other")
        proto = make_node("proto", swarm=swarm, port=17205, proto=2)
        nodes = [a, ok, foreign, fp, proto]
        why = {
            foreign: f"swarm {other!r} != {swarm!r}",
            fp: "fingerprint 'fp-other' != 'fp-main'",
            proto: "protocol version '2' != '1'",
        }

        def ignored(node: MdnsDiscovery) -> list[str]:
            return [
                r.getMessage()
                for r in caplog.records
                if r.name == f"{LOG_NAME}.a"
                and r.levelno == logging.INFO
                and r.getMessage().startswith(f"ignoring mDNS peer {node.node_id} ")
            ]

        def resolutions(node: MdnsDiscovery) -> int:
            return sum(
                r.name == f"{LOG_NAME}.a" and f"-> {node.node_id} at" in r.getMessage()
                for r in caplog.records
            )

        try:
            await asyncio.gather(*(n.start() for n in nodes))
            await wait_for(
                lambda: (
                    a.peers() == [expected(ok)]
                    and ok.peers() == [expected(a)]
                    and all(ignored(n) for n in why)
                ),
                lambda: f"a sees only ok ({a.peers()}) and logs {[ignored(n) for n in why]}",
            )
            for node, reason in why.items():
                assert ignored(node) == [
                    f"ignoring mDNS peer {node.node_id} at {node.advertise}: {reason}"
                ]

            # The foreign node goes and comes back: `a` resolves it again, but says why only once.
            before = resolutions(foreign)
            await foreign.stop()
            again = make_node("foreign", swarm=other, port=17203, node_id=foreign.node_id)
            nodes.append(again)
            await again.start()
            await wait_for(
                lambda: resolutions(foreign) > before,
                lambda: f"a resolves the restarted foreign node ({resolutions(foreign)} times)",
            )
            for node in why:
                assert len(ignored(node)) == 1, ignored(node)
            assert a.peers() == [expected(ok)]
        finally:
            await stop_all(nodes)

    asyncio.run(main())


def test_duplicate_node_id_is_refused_or_warned(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOG_NAME)

    async def main() -> None:
        swarm = f"swarm-{uid()}"
        first = make_node("dup1", swarm=swarm, port=17301)
        second = make_node("dup2", swarm=swarm, port=17302, node_id=first.node_id)

        def warned() -> list[str]:
            return [
                r.getMessage()
                for r in caplog.records
                if r.name == f"{LOG_NAME}.dup1" and r.levelno == logging.WARNING
            ]

        try:
            await first.start()
            try:
                await second.start()
            except NonUniqueNameException:
                return  # zeroconf's probe caught it (a real LAN); on loopback it usually misses
            await wait_for(lambda: bool(warned()), lambda: "first node warns about the duplicate")
            assert warned() == [
                f"another mDNS node announces this node's name {first.instance!r} "
                f"(node_id {first.node_id!r} at {second.advertise}); node ids must be unique"
            ]
            assert first.peers() == [] and second.peers() == []
        finally:
            await stop_all([first, second])

    asyncio.run(main())


def test_stop_is_idempotent_and_safe_after_a_failed_or_interrupted_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def main() -> None:
        swarm = f"swarm-{uid()}"
        never = make_node("never", swarm=swarm, port=17401)
        await never.stop()  # never started: a no-op
        await never.stop()
        assert never.peers() == []
        with pytest.raises(RuntimeError, match="once"):
            await never.start()

        # stop() while start() is announcing: start is cancelled, everything is closed
        node = make_node("interrupted", swarm=swarm, port=17402)
        starting = asyncio.create_task(node.start())
        await wait_for(lambda: node._aiozc is not None, lambda: "start() opened zeroconf")
        await node.stop()
        with pytest.raises(asyncio.CancelledError):
            await starting
        assert node._aiozc is None and node._browser is None
        await node.stop()

        # registration fails after zeroconf was opened and the browser started
        async def refuse(*args: object, **kwargs: object) -> None:
            raise OSError("registration refused")

        broken = make_node("broken", swarm=swarm, port=17403)
        monkeypatch.setattr(AsyncZeroconf, "async_register_service", refuse)
        with pytest.raises(OSError, match="refused"):
            await broken.start()
        assert broken._aiozc is None and broken._browser is None
        await broken.stop()
        await broken.stop()

    asyncio.run(main())


def test_mdns_constructor_checks() -> None:
    node = MdnsDiscovery(
        node_id="node-127.0.0.1-7070",
        swarm_id="s",
        fingerprint="f",
        protocol_version=1,
        advertise="0.0.0.0:7070",
        interface="127.0.0.1",
    )
    assert node.advertise == "127.0.0.1:7070"
    assert node.properties == {
        "node_id": "node-127.0.0.1-7070",
        "swarm_id": "s",
        "proto": "1",
        "fp": "f",
        "addr": "127.0.0.1:7070",
    }
    assert node.service_name == f"{instance_name('node-127.0.0.1-7070')}._declora._tcp.local."
    common = dict(node_id="n", swarm_id="s", fingerprint="f", protocol_version=1)
    with pytest.raises(ValueError, match="not dialable"):
        MdnsDiscovery(**common, advertise="0.0.0.0:7070")
    with pytest.raises(ValueError, match="interface"):
        MdnsDiscovery(**common, advertise="127.0.0.1:7070", interface="lo")
    with pytest.raises(ValueError, match="host:port"):
        MdnsDiscovery(**common, advertise="127.0.0.1")


def test_instance_names_are_valid_and_distinct() -> None:
    assert instance_name("node-a") == "node-a"
    ids = ["node-127.0.0.1-7070", "node-127-0-0-1-7070", "Node-A", "node-a", "ü" * 40, "x" * 200]
    names = [instance_name(i) for i in ids]
    assert len(set(names)) == len(ids)
    for name in names:
        assert len(name.encode()) <= 63
        assert name == name.lower() and name.replace("-", "").isalnum() and name.isascii()
        assert not name.startswith("-") and not name.endswith("-")
    with pytest.raises(ValueError):
        instance_name("")


# --------------------------------------------------------------------------- static


def test_static_discovery_drops_self_keeps_order() -> None:
    static = StaticDiscovery(
        ["b:7071", "127.0.0.1:7070", "a:7072", "B:7071", "[::1]:7073", "[0::1]:7074"],
        "127.0.0.1:7070",
    )
    assert static.peers() == [
        PeerInfo("b:7071"),
        PeerInfo("a:7072"),
        PeerInfo("[::1]:7073"),
        PeerInfo("[0::1]:7074"),
    ]
    assert all(p.node_id == "" for p in static.peers())
    v6 = StaticDiscovery(["[::1]:7073", "[0:0::1]:7074"], "[0::0:1]:7073")
    assert v6.peers() == [PeerInfo("[0:0::1]:7074")]
    assert StaticDiscovery(["h:1"], "").peers() == [PeerInfo("h:1")]
    with pytest.raises(ValueError):
        StaticDiscovery(["no-port"], "127.0.0.1:7070")

    async def lifecycle() -> None:
        await static.start()
        await static.stop()
        await static.stop()

    asyncio.run(lifecycle())
    assert len(static.peers()) == 4


# --------------------------------------------------------------------------- selection


def peers_of(ids: Sequence[str]) -> list[PeerInfo]:
    return [
        PeerInfo(f"10.0.0.{k}:7070", node_id=i, swarm_id="s", fingerprint="f", protocol_version=1)
        for k, i in enumerate(ids)
    ]


def chosen(ids: Sequence[str], self_id: str, k: int) -> set[str]:
    return {
        p.node_id for p in select_neighbors(peers_of([i for i in ids if i != self_id]), self_id, k)
    }


def ring_neighbours(ids: Sequence[str], self_id: str, k: int) -> set[str]:
    """The rule, written out independently: k/2 successors and k/2 predecessors."""
    ring = sorted(ids, key=lambda i: hashlib.sha256(i.encode()).digest())
    n, pos = len(ring), ring.index(self_id)
    offsets = [*range(1, k // 2 + 1), *range(-(k // 2), 0)]
    return {ring[(pos + d) % n] for d in offsets}


@pytest.mark.parametrize("n", range(2, 13))
def test_select_neighbors_bounded_and_symmetric_for_even_bounds(n: int) -> None:
    ids = [f"node-{n}-{i}" for i in range(n)]
    for k in range(1, 7):
        picks = {i: chosen(ids, i, k) for i in ids}
        for i, mine in picks.items():
            assert len(mine) == min(k, n - 1)
            assert i not in mine
            if k % 2 == 0 and n - 1 > k:
                assert mine == ring_neighbours(ids, i, k)
        symmetric = all(
            (j in picks[i]) == (i in picks[j]) for i, j in itertools.combinations(ids, 2)
        )
        # Symmetric exactly when the bound is even or everyone keeps everyone.
        assert symmetric == (k % 2 == 0 or n - 1 <= k), (n, k, picks)


@settings(max_examples=60, deadline=None)
@given(
    ids=st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=16, unique=True),
    k=st.integers(0, 8),
    seed=st.integers(0, 2**32 - 1),
)
def test_select_neighbors_deterministic_and_order_independent(
    ids: list[str], k: int, seed: int
) -> None:
    self_id = ids[0]
    candidates = peers_of(ids)  # self included: it must be dropped
    shuffled = list(candidates)
    random.Random(seed).shuffle(shuffled)
    result = select_neighbors(candidates, self_id, k)
    assert result == select_neighbors(shuffled, self_id, k)
    assert result == select_neighbors(candidates, self_id, k)
    assert len(result) == min(k, len(ids) - 1)
    assert [p.node_id for p in result] == sorted(p.node_id for p in result)
    assert all(p in candidates and p.node_id != self_id for p in result)
    if len(ids) - 1 <= k:
        assert result == sorted(candidates[1:], key=lambda p: p.node_id)


def test_select_neighbors_edge_cases() -> None:
    ids = [f"n{i}" for i in range(5)]
    # a duplicate node id keeps one, whichever comes first
    dup = PeerInfo("10.9.9.9:1", node_id="n1", swarm_id="s", fingerprint="f", protocol_version=1)
    a = select_neighbors([*peers_of(ids), dup], "n0", 8)
    b = select_neighbors([dup, *peers_of(ids)], "n0", 8)
    assert a == b and len(a) == 4
    assert select_neighbors(peers_of(ids), "n0", 0) == []
    assert select_neighbors([], "n0", 3) == []
    with pytest.raises(ValueError, match="static"):
        select_neighbors([PeerInfo("h:1")], "n0", 3)
    with pytest.raises(ValueError):
        select_neighbors(peers_of(ids), "n0", -1)


def test_bad_ids_are_ignored_and_services_are_bounded(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service whose node id is no valid id is ignored (logged escaped); past
    MAX_SERVICES tracked services a newcomer takes the place of one that is no peer
    (the bad id), and is ignored once every tracked one joined a dial."""
    from declora.node import mdns_services

    caplog.set_level(logging.DEBUG, logger=LOG_NAME)
    swarm = f"swarm-{uid()}"
    # a service type of this test's own: any other announcement (an earlier test's, a
    # concurrent run's) could take or free a slot of the bound while m0 and m1 come
    monkeypatch.setattr(mdns_services, "SERVICE_TYPE", f"_dl-{uid()[:8]}._tcp.local.")

    def warnings(node: MdnsDiscovery, text: str) -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.name == f"{LOG_NAME}.a" and text in r.getMessage()
        ]

    async def main() -> None:
        a = make_node("a", swarm=swarm, port=17211)
        bad = make_node("bad", swarm=swarm, port=17212, node_id=f"bad id\x1b[31m{uid()}")
        nodes = [a, bad]
        try:
            await asyncio.gather(*(n.start() for n in nodes))
            await wait_for(
                lambda: bool(warnings(a, "characters outside")),
                lambda: f"a logs the bad id ({caplog.text[-500:]})",
            )
            assert a.peers() == []
            assert "\x1b" not in caplog.text
            assert len(a._generation) == 1  # bad's service, nothing else of this type
            limit = 2  # room for one more, and bad's place
            monkeypatch.setattr(mdns_services, "MAX_SERVICES", limit)
            more = [make_node(f"m{i}", swarm=swarm, port=17213 + i) for i in range(2)]
            nodes += more
            await asyncio.gather(*(n.start() for n in more))
            await wait_for(
                lambda: bool(warnings(a, f"over {limit} services")) and len(a.peers()) == 2,
                lambda: f"a tracks both ({a.peers()}) and warns ({caplog.text[-500:]})",
            )
            assert len(a._generation) == limit  # bad's service gave its place
            for m in more:  # a's handshakes with them
                a.dialled(m.advertise, joined=True)
            late = make_node("m2", swarm=swarm, port=17215)
            nodes.append(late)
            await late.start()
            await asyncio.sleep(1.0)
            assert len(a.peers()) == 2 and len(warnings(a, f"over {limit} services")) == 1
        finally:
            await stop_all(nodes)

    asyncio.run(main())
