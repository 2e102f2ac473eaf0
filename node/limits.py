"""Per-peer rate limits of the daemon's RPCs, sized so that an honest peer never hits them.

- Handshakes: a token bucket per remote host (the IP of `context.peer()`; every dial
  opens a new connection with a new port, so the port is not part of the key). An
  honest node dials a neighbour once to join, again every 2 s only while it is not
  live, and every 0.2 s while it waits at start-up; the default
  (`max_handshakes_per_minute` = 600, bucket of the same size) covers 20 such
  nodes behind one address (a local lab, NAT).
- Pushes: at most `max_pushes_per_round` push streams per live neighbour and round,
  counted at the stream's header, once it named a live neighbour with that
  neighbour's session token (and, under mTLS, its certificate), so a flood past the
  limit is refused before its data is read. Only a holder of the session can spend a
  neighbour's allowance; under a swarm secret without TLS the token travels in clear
  (the MAC over header and data is checked after the data), so an eavesdropper on the
  path could. An honest sender needs at most 3 for a round: its delta, a keyframe when
  the delta was refused as out of step, and one resend after a renewed handshake.
  Pushes for a round at or before this node's round, or too far ahead, are counted
  under the nearest accepted round, so the table stays small. Pushes from a sender
  that is not a live neighbour are refused before they are counted.
- Pulls (a full state, the most expensive reply): a token bucket per remote host,
  `max_pulls_per_minute`; an honest node pulls once when it (re)joins behind.

A refused call changes nothing; the daemon answers RESOURCE_EXHAUSTED with the reason
and counts it as `rate_limited`. Buckets that have refilled are forgotten, so memory
stays bounded by `MAX_KEYS` active keys.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote

import grpc

from declora.node.wire import WireError

MAX_KEYS = 4096
RATE_LIMITED = "rate_limited"


def peer_host(peer: str) -> str:
    """The remote host of `context.peer()`: 'ipv4:10.0.0.5:50012' -> '10.0.0.5',
    'ipv6:[::1]:50012' (or percent-encoded) -> '::1'; anything else unchanged."""
    text = unquote(peer)
    if text.startswith("ipv4:"):
        return text[5:].rsplit(":", 1)[0]
    if text.startswith("ipv6:[") and "]" in text:
        return text[6 : text.index("]")]
    return text


def limited(reason: str) -> WireError:
    return WireError(grpc.StatusCode.RESOURCE_EXHAUSTED, reason, RATE_LIMITED)


@dataclass
class TokenBucket:
    """`capacity` tokens, refilled at `rate` per second; starts full."""

    capacity: float
    rate: float
    tokens: float
    stamp: float

    def _refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + max(0.0, now - self.stamp) * self.rate)
        self.stamp = max(self.stamp, now)

    def take(self, now: float) -> bool:
        """Spend one token if there is one; False (and nothing spent) otherwise."""
        self._refill(now)
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True

    def full(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= self.capacity


@dataclass
class KeyedBuckets:
    """One `TokenBucket(per_minute, per_minute / 60 per second)` per key."""

    per_minute: int
    clock: Callable[[], float] = time.monotonic
    max_keys: int = MAX_KEYS
    buckets: dict[str, TokenBucket] = field(default_factory=dict)

    def allow(self, key: str) -> bool:
        now = self.clock()
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) >= self.max_keys:
                # a full bucket is the same as a new one: forget those
                self.buckets = {k: b for k, b in self.buckets.items() if not b.full(now)}
                if len(self.buckets) >= self.max_keys:
                    return False  # more active keys than the table holds: refuse newcomers
            bucket = TokenBucket(self.per_minute, self.per_minute / 60.0, self.per_minute, now)
            self.buckets[key] = bucket
        return bucket.take(now)


@dataclass
class RoundCounter:
    """At most `limit` events per (key, round), for rounds clamped to
    [current, current + window]: every round at or before `current` (this node's
    completed rounds) shares the slot `current`, which starts empty each time
    `current` moves on; counts of finished rounds are dropped then."""

    limit: int
    window: int
    counts: dict[tuple[str, int], int] = field(default_factory=dict)
    current: int = 0

    def allow(self, key: str, round: int, current: int) -> bool:
        if current != self.current:
            self.current = current
            self.counts = {k: n for k, n in self.counts.items() if k[1] > current}
        slot = (key, min(max(round, current), current + self.window))
        if self.counts.get(slot, 0) >= self.limit:
            return False
        self.counts[slot] = self.counts.get(slot, 0) + 1
        return True


class NodeLimits:
    """The daemon's three limits; each `check_*` raises WireError(RESOURCE_EXHAUSTED)."""

    def __init__(
        self,
        *,
        handshakes_per_minute: int,
        pushes_per_round: int,
        pulls_per_minute: int,
        rounds_ahead: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.handshakes = KeyedBuckets(handshakes_per_minute, clock)
        self.pulls = KeyedBuckets(pulls_per_minute, clock)
        self.pushes = RoundCounter(pushes_per_round, rounds_ahead + 1)

    def check_handshake(self, peer: str) -> None:
        host = peer_host(peer)
        if not self.handshakes.allow(host):
            raise limited(f"more than {self.handshakes.per_minute} handshakes a minute from {host}")

    def check_push(self, sender: str, round: int, current: int) -> None:
        """One push stream from live neighbour `sender` for `round`; `current` is this
        node's last completed round."""
        if not self.pushes.allow(sender, round, current):
            raise limited(f"more than {self.pushes.limit} pushes for round {round} from {sender!r}")

    def check_pull(self, host: str) -> None:
        """One pull from remote `host`."""
        if not self.pulls.allow(host):
            raise limited(f"more than {self.pulls.per_minute} pulls a minute from {host!r}")
