"""The swarm secret's per-source replay floors, as a node keys them (review of attack
11's fix): the Handshake answer of a real daemon's parts, and a real dial.

- a holder of the secret flooding signed Hellos dated ahead from many addresses of one
  IPv6 /64 (any one machine has them) no longer folds its floors into one for every
  source: honest Hellos are still accepted (each address had a floor of its own, so
  enough of them folded the flood's future date into the floor of all);
- a dial checks the Welcome under the dialled host's key, the one the same node's own
  Hellos are checked under (it was keyed by the address string, host:port).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from test_auth_mismatch import serve, served_parts, stop

from declora.node.daemon.auth import Auth
from declora.node.security import SwarmAuth

SECRET = "revsec-secret-0123456789abcdef"
CACHE = 20  # the replay cache's size here: the same rule as 100,000


class Ahead:
    """A clock `skew` s ahead of the real one (a member dating its calls ahead)."""

    def __init__(self, skew: float) -> None:
        import time

        self.skew, self.time = skew, time.time

    def __call__(self) -> float:
        return self.time() + self.skew


def test_a_flood_from_one_ipv6_64_leaves_honest_hellos_accepted(synthetic_jsonl: Path) -> None:
    (_, a), (_, b) = served_parts(
        synthetic_jsonl,
        [("a", {"swarm_secret": SECRET}, None), ("b", {"swarm_secret": SECRET}, None)],
    )
    secret = a.handshaker.auth.secret
    assert secret is not None
    secret.max_nonces = CACHE
    flooder = SwarmAuth(SECRET.encode(), clock=Ahead(110.0))
    for i in range(3 * CACHE):  # each from another address of 2001:db8::/64
        hello = flooder.sign(b.handshaker.hello(receiver="a"))
        a.handshaker.answer(hello, peer=f"ipv6:[2001:db8::{i + 1:x}]:4000")
    for i in range(3):  # honest nodes elsewhere, signing now
        welcome = a.handshaker.answer(b.handshaker.hello(receiver="a"), peer=f"ipv4:10.0.0.{i}:1")
        assert "replayed" not in welcome.reason, welcome.reason
        assert "not authenticated" not in welcome.reason, welcome.reason


def test_source_keys() -> None:
    from declora.node.daemon.auth import source_key

    assert source_key("2001:db8::1") == source_key("2001:db8::2") == "2001:db8::/64"
    assert source_key("10.0.0.1") != source_key("10.0.0.2")
    assert source_key("::ffff:10.0.0.1") == source_key("10.0.0.1")
    assert source_key("127.0.0.2") == "127.0.0.2"


def test_a_dial_checks_the_welcome_under_the_dialled_hosts_key(synthetic_jsonl: Path) -> None:
    nodes = served_parts(
        synthetic_jsonl,
        [("a", {"swarm_secret": SECRET}, None), ("b", {"swarm_secret": SECRET}, None)],
    )
    (_, a), (_, b) = nodes
    hosts: list[str] = []
    original = Auth.refusal

    def spy(self: Auth, msg: object, what: str, host: str = "") -> str:
        if what.startswith("the welcome of"):
            hosts.append(host)
        return original(self, msg, what, host)  # type: ignore[arg-type]

    async def go() -> None:
        await serve(nodes)
        try:
            a.handshaker.auth.refusal = spy.__get__(a.handshaker.auth)  # type: ignore[method-assign]
            assert await a.handshaker.dial(b.settings.advertise) is not None
        finally:
            await stop(nodes)

    asyncio.run(go())
    assert hosts == ["127.0.0.1"]
