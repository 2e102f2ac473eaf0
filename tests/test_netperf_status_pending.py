"""A configured peer (`--peers`) that has not joined is listed in `status` with how far
it got (`Status.pending`): "resolving" while its DNS name has not answered, the DNS
failure once a dial says so, "dialling" for an IP address; before, such a peer was in
neither the table nor the JSON until its name resolved and it shook hands."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from memory_transport import MemoryNetwork, MemoryTransport
from test_daemon_parts import settings

from declora.cli.client import render_status
from declora.node.daemon.daemon import Daemon
from declora.node.daemon.service import SwarmService
from declora.node.daemon.startup import DialLog
from declora.proto import pb

NAME = "peer-a.invalid:7401"  # .invalid never resolves (RFC 2606)


def test_configured_peers_not_joined_are_listed_with_how_far_they_got(
    synthetic_jsonl: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    network = MemoryNetwork()
    sb = settings("b", synthetic_jsonl, 1, [])
    b = Daemon(sb, MemoryTransport(network, sb, None)).build()
    network.serve(sb.advertise, SwarmService(b))
    configured = [NAME, "127.0.0.1:7409", sb.advertise]
    sa = settings("a", synthetic_jsonl, 0, configured)
    a = Daemon(sa, MemoryTransport(network, sa, None)).build()
    a.handshaker.transport.dial_log = DialLog()

    async def go() -> tuple[pb.StatusReply, pb.StatusReply]:
        before = await a.status()
        assert await a.handshaker.dial(sb.advertise) is not None
        a.handshaker.transport.dial_log.record(sb.advertise, "")  # as the transport does
        a.handshaker.transport.dial_log.record(NAME, "DNS lookup of peer-a.invalid failed")
        return before, await a.status()

    before, after = asyncio.run(go())
    assert [(p.address, p.reach) for p in before.pending] == [
        (NAME, "resolving"),
        ("127.0.0.1:7409", "dialling"),
        (sb.advertise, "dialling"),
    ]
    assert [(p.address, p.reach) for p in after.pending] == [
        (NAME, "DNS lookup of peer-a.invalid failed"),
        ("127.0.0.1:7409", "dialling"),
    ]  # b joined: a neighbour row instead
    assert [n.node_id for n in after.neighbors] == ["b"]
    render_status(after, width=200)
    out = capsys.readouterr().out
    assert f"not joined: {NAME} (DNS lookup of peer-a.invalid failed)" in out
    assert "not joined: 127.0.0.1:7409 (dialling)" in out
