"""Per-peer rate limits of the daemon's RPCs, sized so that an honest peer never hits them.

- Handshakes: a token bucket per remote address (`address_key`: the IP of
  `context.peer()`; every dial opens a new connection with a new port, so the port is
  not part of the key; an IPv4 address exactly, so the nodes of one LAN never share a
  bucket, an IPv6 one by its /64, which one machine may fill with addresses). An
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
  Only pushes the node would read are counted: pushes for a round at or before this
  node's round (stale) or beyond its window are refused from their header first and
  count nothing, so a neighbour whose rounds diverged from this node's, retrying, never
  exhausts an allowance; rounds past `window` share its last slot, so the table stays
  small. Pushes from a sender that is not a live neighbour are refused before they are
  counted.
- Pulls (a full state, the most expensive reply): a token bucket per remote address
  (`address_key`), `max_pulls_per_minute`; an honest node pulls once when it (re)joins
  behind.
- Status: a token bucket per remote address (`address_key`), `STATUS_PER_MINUTE`
  (1200), with or
  without a swarm secret: `lab` asks each node once a second, a test every 0.2 s, and
  the CLI once, so four pollers at full speed fit; a flood gets 20 answers a second.

A refused call changes nothing; the daemon answers RESOURCE_EXHAUSTED with the reason
and counts it as `rate_limited`. Buckets that have refilled are forgotten, so memory
stays bounded by `MAX_KEYS` active keys.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote

import grpc

from declora.node.wire import WireError

MAX_KEYS = 4096
STATUS_PER_MINUTE = 1200  # Status requests a minute from one remote address
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


IPV4_PREFIX = 24  # one host for the per-host limits: a /24 (one allocation, one attacker)
IPV6_PREFIX = 64  # ...or a /64 (what one IPv6 site or machine is given)


def host_key(host: str) -> str:
    """The key of the per-host limits for remote `host` (`peer_host`): its network, so
    an attacker cannot multiply its share by the addresses of one allocation.
    '10.0.0.5' -> '10.0.0.0/24', '2001:db8::1' -> '2001:db8::/64', an IPv4-mapped
    IPv6 address as its IPv4 one; a loopback address is its own key ('127.0.0.1':
    only this machine's processes connect from one, and a local lab or test may stand
    for other hosts by other loopback addresses); anything that is not an IP
    unchanged."""
    return _network_key(host, IPV4_PREFIX)


def address_key(host: str) -> str:
    """The key of the per-address rate limits (handshakes, pulls, Status) for remote
    `host` (`peer_host`): an IPv4 address exactly (the nodes of one LAN never share a
    bucket), an IPv6 one by its /64 (one machine may hold a whole /64, so rotating
    addresses within it buys no tokens; the IPv6 nodes of one LAN share its bucket,
    as nodes behind one NAT do: the handshake cap covers 20). '10.0.0.5' ->
    '10.0.0.5', '2001:db8::1' -> '2001:db8::/64', an IPv4-mapped IPv6 address as its
    IPv4 one, a loopback address ('::1', '127.0.0.2') as is; anything that is not an
    IP unchanged."""
    return _network_key(host, 32)


def _network_key(host: str, ipv4_prefix: int) -> str:
    """`host`'s network: `ipv4_prefix` bits of an IPv4 address (the address alone at
    32), IPV6_PREFIX of an IPv6 one (IPv4-mapped: as IPv4), a loopback address alone."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = ipv4_prefix if ip.version == 4 else IPV6_PREFIX
    if ip.is_loopback or prefix == ip.max_prefixlen:
        return str(ip)
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


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
    """At most `limit` events per (key, round) for rounds after `current` (this node's
    last completed round), those past `current + window` sharing the last slot; a
    round at or before `current` is finished: always allowed and never counted (the
    caller refuses it, stale, before reading anything). Counts of finished rounds are
    dropped when `current` moves on."""

    limit: int
    window: int
    counts: dict[tuple[str, int], int] = field(default_factory=dict)
    current: int = 0

    def allow(self, key: str, round: int, current: int) -> bool:
        if current != self.current:
            self.current = current
            self.counts = {k: n for k, n in self.counts.items() if k[1] > current}
        if round <= current:
            return True
        slot = (key, min(round, current + self.window))
        if self.counts.get(slot, 0) >= self.limit:
            return False
        self.counts[slot] = self.counts.get(slot, 0) + 1
        return True


class NodeLimits:
    """The daemon's four limits; each `check_*` raises WireError(RESOURCE_EXHAUSTED)."""

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
        self.statuses = KeyedBuckets(STATUS_PER_MINUTE, clock)
        # before its first round a node reads pushes up to twice `rounds_ahead` ahead
        # (`Inbox._check_sender`): each of those rounds has its own slot
        self.pushes = RoundCounter(pushes_per_round, 2 * rounds_ahead)

    def check_handshake(self, peer: str) -> None:
        """One Handshake from `peer` (`context.peer()`), counted by `address_key`."""
        key = address_key(peer_host(peer))
        if not self.handshakes.allow(key):
            raise limited(f"more than {self.handshakes.per_minute} handshakes a minute from {key}")

    def check_push(self, sender: str, round: int, current: int) -> None:
        """One push stream from live neighbour `sender` for `round`; `current` is this
        node's last completed round."""
        if not self.pushes.allow(sender, round, current):
            raise limited(f"more than {self.pushes.limit} pushes for round {round} from {sender!r}")

    def check_status(self, peer: str) -> None:
        """One Status request from `peer` (`context.peer()`), counted by `address_key`."""
        key = address_key(peer_host(peer))
        if not self.statuses.allow(key):
            raise limited(
                f"more than {self.statuses.per_minute} Status requests a minute from {key}"
            )

    def check_pull(self, host: str) -> None:
        """One pull from remote `host` (`peer_host`), counted by `address_key`."""
        key = address_key(host)
        if not self.pulls.allow(key):
            raise limited(f"more than {self.pulls.per_minute} pulls a minute from {key!r}")
