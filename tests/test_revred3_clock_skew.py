"""Clock skew between honest holders of one swarm secret (`SwarmAuth`), revred3.

A signed message dated more than the window away from the receiver's clock is
refused `stale_nonce`; the reason reaches both the receiver's log and the sender
(as its peer's answer), so it must say whose clock is ahead without "this node":
before, a dialer with the right clock read "timestamp -200.0s from this node's
clock" about its own Hello, refused by a peer whose clock was 200 s ahead. A message
at the window's edge is accepted once and never again."""

from __future__ import annotations

import pytest

from declora.node.security import AuthError, SwarmAuth
from declora.proto import pb

SECRET = b"s3cret-s3cret-s3cret"
NOW = 1_800_000_000.0  # a fixed unix time: the clocks are fakes


def signed(at: float) -> pb.Hello:
    return SwarmAuth(SECRET, clock=lambda: at).sign(pb.Hello(node_id="n1", swarm_id="s"))


@pytest.mark.parametrize(("skew", "side"), [(200.0, "ahead of"), (-200.0, "behind")])
def test_a_skewed_senders_refusal_says_whose_clock_is_ahead(skew: float, side: str) -> None:
    receiver = SwarmAuth(SECRET, clock=lambda: NOW)
    with pytest.raises(AuthError) as refused:
        receiver.verify(signed(NOW + skew), "127.0.0.2")
    assert refused.value.counter == "stale_nonce"
    reason = refused.value.reason
    assert f"200.0s {side} the receiving node's clock" in reason, reason
    assert "NTP" in reason and "this node" not in reason, reason
    assert "\n" not in reason


def test_at_the_windows_edge_a_message_is_accepted_once() -> None:
    clock = [NOW]
    receiver = SwarmAuth(SECRET, window=120.0, clock=lambda: clock[0])
    edge = signed(NOW - 120.0)  # exactly the window behind: accepted
    receiver.verify(edge, "127.0.0.2")
    with pytest.raises(AuthError) as again:
        receiver.verify(edge, "127.0.0.2")
    assert again.value.counter == "replay"
    clock[0] += 0.001  # its nonce left the cache: the timestamp refuses it now
    with pytest.raises(AuthError) as later:
        receiver.verify(edge, "127.0.0.2")
    assert later.value.counter == "stale_nonce"
    with pytest.raises(AuthError):
        receiver.verify(signed(NOW + 120.002), "127.0.0.2")  # just past the edge ahead
    receiver.verify(signed(NOW + 120.0), "127.0.0.2")  # ...at it: accepted
