"""The swarm secret's replay cache under a flood from one holder of the secret
(`security.SwarmAuth`): a nonce forgotten early moves the floor of its own source
only. Before, one floor for all: a member's 101,000 signed Leave notices dated 110 s
ahead (54 s from one client, against a real daemon) had the node refuse every honest
signed Hello and Status as a replay while the flood went on."""

from __future__ import annotations

import pytest

from declora.node.security import AuthError, SwarmAuth
from declora.proto import pb

SECRET = b"s" * 32
CACHE = 100  # max_nonces: a small cache, the same rule


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def signed(clock: Clock, skew: float = 0.0) -> pb.StatusRequest:
    """A Status request signed by a holder of the secret whose clock reads `skew` s off."""
    return SwarmAuth(SECRET, clock=lambda: clock.now + skew).sign(pb.StatusRequest())


def test_a_flood_dated_ahead_leaves_honest_sources_accepted() -> None:
    clock = Clock()
    node = SwarmAuth(SECRET, max_nonces=CACHE, clock=clock)
    refused = 0
    for _ in range(2 * CACHE):  # a member, from one address, dated 110 s ahead
        try:
            node.verify(signed(clock, 110.0), "10.0.0.66")
        except AuthError:
            refused += 1  # ...past its own floor: its own are refused
    assert refused == CACHE - 1
    for _ in range(5):  # then honest nodes, one a second behind the other
        clock.now += 1.0
        node.verify(signed(clock), "10.0.0.1")
        node.verify(signed(clock, -1.0), "10.0.0.2")
    assert node.remembered == CACHE


def test_a_replay_is_refused_whether_its_nonce_is_kept_or_forgotten() -> None:
    clock = Clock()
    node = SwarmAuth(SECRET, max_nonces=CACHE, clock=clock)
    first = signed(clock)
    node.verify(first, "10.0.0.1")
    with pytest.raises(AuthError, match="replayed"):  # kept: refused from any source
        node.verify(first, "10.0.0.9")
    for _ in range(CACHE):  # forgotten: its source's floor refuses it
        node.verify(signed(clock, 50.0), "10.0.0.1")
    with pytest.raises(AuthError, match="replayed"):
        node.verify(first, "10.0.0.1")


def test_floors_are_bounded() -> None:
    """Many sources: at most max_nonces floors, the oldest folded into one for all."""
    clock = Clock()
    node = SwarmAuth(SECRET, max_nonces=4, clock=clock)
    for i in range(50):
        node.verify(signed(clock, i / 10), f"10.0.1.{i}")
    assert len(node._floors) <= 4  # the bound is the point
    old = signed(clock, 0.05)
    with pytest.raises(AuthError, match="replayed"):  # folded floor: refused anywhere
        node.verify(old, "10.0.2.1")
