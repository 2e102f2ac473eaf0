"""Link-local IPv6 addresses per link in the per-network limits (`limits.host_key`:
the push-stream pool per network and the push buffer's share per network), from
`context.peer()` as gRPC reports it ('ipv6:%5Bfe80::1%254%5D:1234', the zone the
interface index) to the key: the hosts of one link share a key, another link's are
apart (before, every link's were one 'fe80::/64')."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import grpc
import pytest

from declora.node.daemon.pushbuffer import HOST_SHARE, PushBuffer
from declora.node.limits import address_key, host_key, peer_host
from declora.node.wire import WireError
from declora.proto import pb, pb_grpc


def test_host_key_keeps_a_link_local_zone() -> None:
    assert host_key("fe80::1%eth0") == host_key("fe80::2%eth0") == "fe80::/64%eth0"
    assert host_key("fe80::1%eth1") == "fe80::/64%eth1" != host_key("fe80::1%eth0")
    assert host_key("fe80::1") == "fe80::/64"  # no zone: as before
    assert host_key("2001:db8::1%eth0") == "2001:db8::/64"  # a global address: its /64


@pytest.mark.parametrize(
    ("peer", "key"),
    [
        ("ipv6:%5Bfe80::1%254%5D:50012", "fe80::/64%4"),  # as grpc 1.85 reports it
        ("ipv6:[fe80::1%254]:50012", "fe80::/64%4"),  # RFC 6874, brackets unencoded
        ("ipv6:[fe80::1%eth0]:50012", "fe80::/64%eth0"),
    ],
)
def test_a_peer_string_keeps_its_link(peer: str, key: str) -> None:
    host = peer_host(peer)
    assert host_key(host) == key
    other = peer.replace("%254", "%255").replace("%eth0", "%eth1")
    assert host_key(peer_host(other)) != key
    assert address_key(host) != address_key(peer_host(other))


def test_the_push_buffer_keeps_links_apart() -> None:
    """A stream from another link has its own share of the pool; another host of the
    same link shares the first one's."""
    buffer = PushBuffer(max_message=100)
    first = buffer.stream(peer_host("ipv6:%5Bfe80::1%254%5D:50012"))
    first.take(HOST_SHARE * 100)
    with pytest.raises(WireError, match="already buffer"):
        buffer.stream(peer_host("ipv6:%5Bfe80::2%254%5D:50013")).take(1)
    buffer.stream(peer_host("ipv6:%5Bfe80::1%255%5D:50012")).take(1)  # another link


def link_locals() -> list[tuple[str, int]]:
    """This machine's link-local IPv6 addresses and their interface indexes."""
    try:
        rows = Path("/proc/net/if_inet6").read_text().split()
    except OSError:
        return []
    found = []
    for i in range(0, len(rows) - 5, 6):
        hex_ip, index, _len, scope = rows[i : i + 4]
        if scope == "20":  # link
            ip = socket.inet_ntop(socket.AF_INET6, bytes.fromhex(hex_ip))
            found.append((ip, int(index, 16)))
    return found


class Recording(pb_grpc.SwarmServicer):
    def __init__(self) -> None:
        self.peers: list[str] = []

    async def Handshake(self, request: pb.Hello, context: grpc.aio.ServicerContext) -> pb.Welcome:
        self.peers.append(context.peer())
        return pb.Welcome(accepted=False, reason="recorded")


@pytest.mark.skipif(not link_locals(), reason="no link-local IPv6 address here")
def test_a_real_link_local_caller_is_keyed_by_its_link() -> None:
    """A real gRPC call over a link-local address: its `context.peer()` carries the
    zone, and the key keeps it."""
    ip, index = link_locals()[0]
    servicer = Recording()

    async def call() -> None:
        server = grpc.aio.server()
        pb_grpc.add_SwarmServicer_to_server(servicer, server)
        port = server.add_insecure_port("[::]:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"ipv6:[{ip}%{index}]:{port}") as channel:
                await pb_grpc.SwarmStub(channel).Handshake(pb.Hello(), timeout=10)
        finally:
            await server.stop(None)

    asyncio.run(call())
    [peer] = servicer.peers
    assert host_key(peer_host(peer)) == f"fe80::/64%{index}", peer
