"""The swarm secret's replay floors under a flood from more sources than the cache
holds (redteam2; `security.SwarmAuth`, a small cache, the same rule). A holder of the
secret signing from more than `max_nonces` addresses (on a node's own host: any of
127.0.0.0/8) folded its floors, dated ahead, into the floor of every source, and every
honest sender elsewhere was refused `replayed nonce`; now they fold into the floor of
their /16 (IPv4) or /48 (IPv6) first."""

from __future__ import annotations

from contextlib import suppress

import pytest

from declora.node.security import AuthError, SwarmAuth, floor_network
from declora.proto import pb

SECRET = b"s" * 32
CACHE = 100  # max_nonces
SOURCES = 3 * CACHE  # the flood's addresses: more than the cache holds


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def signed(clock: Clock, skew: float = 0.0) -> pb.LeaveNotice:
    return SwarmAuth(SECRET, clock=lambda: clock.now + skew).sign(pb.LeaveNotice())


def flooded(clock: Clock) -> tuple[SwarmAuth, pb.LeaveNotice]:
    """A node after a member's flood dated 110 s ahead from `SOURCES` loopback
    addresses, and one of the flood's messages (already taken)."""
    node = SwarmAuth(SECRET, max_nonces=CACHE, clock=clock)
    first = signed(clock, 110.0)
    node.verify(first, "127.0.0.2")
    for i in range(2 * SOURCES):
        clock.now += 0.001
        address = f"127.0.{1 + i % SOURCES // 250}.{1 + i % SOURCES % 250}"
        with suppress(AuthError):  # past its own floor
            node.verify(signed(clock, 110.0), address)
    return node, first


def test_a_flood_from_many_addresses_leaves_other_networks_accepted() -> None:
    clock = Clock()
    node, _ = flooded(clock)
    for _ in range(3):  # before: refused as replayed
        clock.now += 1.0
        node.verify(signed(clock), "10.0.0.1")
        node.verify(signed(clock), "2001:db8::/64")


def test_a_replay_from_the_floods_network_is_still_refused() -> None:
    clock = Clock()
    node, first = flooded(clock)
    with pytest.raises(AuthError, match="replayed"):
        node.verify(first, "127.0.9.9")  # its nonce forgotten: its network's floor


@pytest.mark.parametrize(
    ("source", "network"),
    [
        ("10.1.2.3", "10.1.0.0/16"),
        ("2001:db8:1:2::/64", "2001:db8:1::/48"),
        ("fe80::/64%4", "fe80::/48"),
        ("not-an-ip", ""),
    ],
)
def test_floor_network(source: str, network: str) -> None:
    assert floor_network(source) == network
