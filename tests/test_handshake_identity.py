"""Who may speak for a node id in open mode (no swarm secret, no mTLS), what a Hello
may name as its listen address, and how much a flood of refused Hellos may log.

In-process: two daemons' parts on the in-memory network (`test_daemon_parts.pair`);
a Hello's remote host is given to `Handshaker.answer` as gRPC's `context.peer()`."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from test_daemon_parts import RULE, hello, pair

from declora.node.daemon.admission import check_hello, same_host
from declora.node.daemon.handshake import RefusalLog
from declora.node.daemon.parts import Parts
from declora.node.limits import peer_host
from declora.proto import pb


def introduced(data: Path) -> tuple[Parts, Parts]:
    """A pair where a dialled b: both live, b knows a at a's advertised address."""
    _, (a, b) = pair(data)

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None

    asyncio.run(go())
    return a, b


def as_a(a: Parts, b: Parts, **changes: object) -> pb.Hello:
    """A Hello in a's name for b, with a's listen address (what Status shows anyone)."""
    fields: dict[str, object] = {
        "node_id": "a",
        "swarm_id": "parts",
        "fingerprint": a.lm.fingerprint,
        "listen_address": a.settings.advertise,
        "session": b"M" * 16,
    }
    return hello(**{**fields, **changes})


def test_a_live_id_cannot_be_taken_over_from_another_host(synthetic_jsonl: Path) -> None:
    a, b = introduced(synthetic_jsonl)
    peer = b.peers.get("a")
    assert peer is not None and peer.live
    held = a.peers.get("b")
    assert held is not None and peer.token_ok(held.token_out)
    token, token_out = peer.token_in, peer.token_out

    # a third party elsewhere, with a's id and a's real address: refused, nothing changes
    w = b.handshaker.answer(as_a(a, b), None, "ipv4:10.9.9.9:40000")
    assert not w.accepted and "live from another host" in w.reason
    assert not w.node.session
    assert (peer.token_in, peer.token_out, peer.live) == (token, token_out, True)
    assert b.counters.rejected.get("handshake") == 1

    # a re-handshake from a's own host (a restart that lost its token) is accepted, with
    # a fresh token: never the one a holds; a's own token stays valid beside it
    w = b.handshaker.answer(as_a(a, b), None, "ipv4:127.0.0.1:40001")
    assert w.accepted and w.node.session == peer.token_in
    assert w.node.session not in (token, held.token_out)
    assert peer.token_ok(held.token_out) and peer.host == "127.0.0.1"
    # 127.0.0.1 and ::1 are one machine (a local lab)
    again = b.handshaker.answer(as_a(a, b, session=b"N" * 16), None, "ipv6:[::1]:40002")
    assert again.accepted and again.node.session not in (w.node.session, token)

    # once a's host is learned, only that host may speak for a while it is live
    w = b.handshaker.answer(as_a(a, b, session=b"O" * 16), None, "ipv6:[::ffff:10.9.9.9]:4")
    assert not w.accepted and "live from another host" in w.reason


def test_strangers_hellos_never_evict_the_token_in_use(synthetic_jsonl: Path) -> None:
    """However many same-host Hellos in a's name (each gets a fresh token), the token
    of a's last validated payload stays valid."""
    a, b = introduced(synthetic_jsonl)
    peer, held = b.peers.get("a"), a.peers.get("b")
    assert peer is not None and held is not None
    peer.token_used = held.token_out  # what the inbox records from a validated push
    for i in range(3):
        w = b.handshaker.answer(as_a(a, b, session=bytes([i + 1]) * 16), None, "ipv4:127.0.0.1:1")
        assert w.accepted and w.node.session != held.token_out
    assert peer.token_ok(held.token_out)


def test_a_peer_dialled_by_name_is_renewed_only(synthetic_jsonl: Path) -> None:
    """A live peer this node dialled by DNS name and never heard from has no known
    host: a Hello in its name is accepted only as a renewal."""
    a, b = introduced(synthetic_jsonl)
    peer = b.peers.get("a")
    assert peer is not None
    peer.host, peer.address = "", "node-a.lan:7070"
    w = b.handshaker.answer(as_a(a, b, listen_address="node-a.lan:7070"), None, "ipv4:10.9.9.9:1")
    assert not w.accepted and "only it can renew" in w.reason
    renewal = as_a(a, b, listen_address="node-a.lan:7070", session=peer.token_out)
    w = b.handshaker.answer(renewal, None, "ipv4:10.9.9.9:1")
    assert w.accepted and peer.host == "10.9.9.9"


def test_a_renewal_keeps_its_token_and_may_come_from_another_host(synthetic_jsonl: Path) -> None:
    a, b = introduced(synthetic_jsonl)
    peer, held = b.peers.get("a"), a.peers.get("b")
    assert peer is not None and held is not None
    token = peer.token_in

    async def renew() -> None:  # a dials b again: its Hello repeats b's token_out
        assert await a.handshaker.dial(b.settings.advertise) is not None

    asyncio.run(renew())
    assert peer.token_in == token and held.token_out == token
    # the session b holds for a proves a renewal, whatever host it comes from (NAT)
    w = b.handshaker.answer(as_a(a, b, session=peer.token_out), None, "ipv4:10.9.9.9:1")
    assert w.accepted and w.node.session == token and peer.host == "10.9.9.9"


def test_a_host_learned_from_a_hello_binds_the_id_while_live(synthetic_jsonl: Path) -> None:
    _, (_a, b) = pair(synthetic_jsonl)
    fp = b.lm.fingerprint

    def c(session: bytes) -> pb.Hello:
        fields = {"swarm_id": "parts", "fingerprint": fp, "listen_address": "node-c.lan:7070"}
        return hello(node_id="c", session=session, **fields)

    first = b.handshaker.answer(c(b"1" * 16), None, "ipv4:10.0.0.5:5000")
    peer = b.peers.get("c")
    assert first.accepted and peer is not None and peer.host == "10.0.0.5"
    w = b.handshaker.answer(c(b"2" * 16), None, "ipv4:10.0.0.6:5000")
    assert not w.accepted and "live from another host" in w.reason
    restarted = b.handshaker.answer(c(b"3" * 16), None, "ipv4:10.0.0.5:5001")
    assert restarted.accepted and restarted.node.session != first.node.session
    assert peer.token_ok(first.node.session)  # the one before stays valid (in flight)
    renewed = b.handshaker.answer(c(b"3" * 16), None, "ipv4:10.0.0.5:5002")
    assert renewed.accepted and renewed.node.session == restarted.node.session
    b.peers.drop(peer, "test")  # not live: anyone may introduce itself as c again
    w = b.handshaker.answer(c(b"4" * 16), None, "ipv4:10.0.0.6:5000")
    assert w.accepted and peer.host == "10.0.0.6"


def test_a_hello_may_not_name_this_nodes_own_address(synthetic_jsonl: Path) -> None:
    _, (_a, b) = pair(synthetic_jsonl)
    own = hello(
        node_id="w",
        swarm_id="parts",
        fingerprint=b.lm.fingerprint,
        listen_address=b.settings.advertise,
    )
    w = b.handshaker.answer(own, None, "ipv4:127.0.0.1:1")
    assert not w.accepted and "this node's own" in w.reason and b.peers.get("w") is None


def test_remote_hosts() -> None:
    assert peer_host("ipv4:10.0.0.5:50012") == "10.0.0.5"
    assert peer_host("ipv6:[::1]:50012") == "::1"
    assert peer_host("ipv6:%5B::1%5D:50012") == "::1"
    assert peer_host("unix:/tmp/x") == "unix:/tmp/x"
    assert same_host("127.0.0.1", "::1") and same_host("::ffff:10.0.0.5", "10.0.0.5")
    assert not same_host("10.0.0.5", "10.0.0.6") and not same_host("mem-a", "mem-b")
    assert not same_host("127.0.0.1", "127.0.0.2")  # as the per-host limits count them


@pytest.mark.parametrize(
    "address",
    [
        "unix:/tmp/audit/nosock",
        "unix-abstract:zz",
        "dns:///evil.invalid:1",
        "ipv4:127.0.0.1:1,127.0.0.2:1",
        "a\x00b:1",
        "[::1",
        "[zz]:1",
        "127.0.0.1:0",
        "h:65536",
        "h",
        " 10.0.0.1:7070",
        "-bad:1",
        "a..b:1",
        "999.1.1.1:5",
        "a/b:1",
    ],
)
def test_a_listen_address_must_be_host_port(address: str) -> None:
    got = check_hello(hello(listen_address=address), **RULE)  # type: ignore[arg-type]
    why = ("host:port", "host name", "1-65535")  # a port out of range is named so
    assert got.startswith("listen address") and any(w in got for w in why)


@pytest.mark.parametrize(
    "address", ["", "10.0.0.1:7070", "[::1]:7070", "node-a.lan:1", "h_1:65535", "localhost.:7070"]
)
def test_a_host_port_listen_address_passes(address: str) -> None:
    assert check_hello(hello(listen_address=address), **RULE) == ""  # type: ignore[arg-type]


def test_refused_hellos_log_a_bounded_number_of_lines(synthetic_jsonl: Path) -> None:
    _, (_a, b) = pair(synthetic_jsonl)
    now = [0.0]
    b.handshaker.refusals = RefusalLog("refused handshakes", clock=lambda: now[0])
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger("declora.node.daemon.handshake")
    keep = Keep(logging.WARNING)
    logger.addHandler(keep)
    try:
        for i in range(600):  # each one differs: a fresh id, another swarm
            w = b.handshaker.answer(hello(node_id=f"flood-{i}", swarm_id=f"x{i}"), None, "x")
            assert not w.accepted and "swarm" in w.reason
            now[0] += 0.002
        assert len(lines) == 20 and all("refused handshake from" in x for x in lines)
        now[0] += 60.0
        b.handshaker.refusals.flush()
        assert len(lines) == 21 and lines[-1].startswith("580 more refused handshakes")
        b.handshaker.answer(hello(node_id="late", swarm_id="y"), None, "x")  # a new window
        assert len(lines) == 22 and "'late'" in lines[-1]
    finally:
        logger.removeHandler(keep)
    assert b.counters.rejected["handshake"] == 601  # every one counted
