"""Per-peer rate limits of the daemon's RPCs, sized so that an honest peer never hits them.

- Handshakes: a token bucket per remote address (`address_key`: the IP of
  `context.peer()`; every dial opens a new connection with a new port, so the port is
  not part of the key; each IPv4 or IPv6 address its own, so the nodes of one LAN
  never share a bucket), and for an IPv6 address one more per /64 (`subnet_key`) of
  `SUBNET_SHARE` (16) times the per-address rate, so an attacker rotating addresses
  within its /64 gains at most 16 addresses' allowance (see `AddressBuckets`). An
  honest node dials a neighbour once to join, again every 2 s only while it is not
  live, and every 0.2 s while it waits at start-up; the default
  (`max_handshakes_per_minute` = 600, bucket of the same size) covers 20 such
  nodes behind one address (a local lab, NAT), and 320 in one IPv6 /64.
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
- Pulls (a full state, the most expensive reply): per remote address and IPv6 /64 as
  handshakes, `max_pulls_per_minute` (12; 192 for a /64); an honest node pulls once
  when it (re)joins behind.
- Status: per remote address and IPv6 /64 as handshakes, `STATUS_PER_MINUTE` (1200;
  19200 for a /64), with or without a swarm secret: `lab` asks each node once a
  second, a test every 0.2 s, and the CLI once, so four pollers at full speed fit; a
  flood gets 20 answers a second.

A refused call changes nothing; the daemon answers RESOURCE_EXHAUSTED with the reason
and counts it as `rate_limited`. Buckets that have refilled are forgotten, so memory
stays bounded by `MAX_KEYS` active keys a table (addresses and /64s have one each);
the push counts keep at most `MAX_KEYS` (sender, round) slots, the oldest forgotten
past that (only while this node's round stands still can ids that come and go fill it).
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple
from urllib.parse import unquote

import grpc

from declora.node.address import ip_of
from declora.node.wire import WireError

log = logging.getLogger(__name__)

MAX_KEYS = 4096  # keys of one table (`KeyedBuckets`, `RoundCounter`)
STATUS_PER_MINUTE = 1200  # Status requests a minute from one remote address
# An IPv6 /64 (one LAN, one cloud subnet, or one machine that may fill it with
# addresses) may spend this many addresses' allowance: 320 honest nodes dialling at
# start-up pace, while an attacker rotating addresses within it gains 16x, not 2^64x.
SUBNET_SHARE = 16
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
    IPv6 address as its IPv4 one; a link-local IPv6 address is its link's /64 with its
    zone ('fe80::1%4' -> 'fe80::/64%4': the hosts of one link share a key, another
    link is another network); a loopback address is its own key ('127.0.0.1': only
    this machine's processes connect from one, and a local lab or test may stand for
    other hosts by other loopback addresses); anything that is not an IP unchanged."""
    ip = ip_of(host)
    if ip is None:
        return host
    if ip.is_loopback:
        return str(ip)
    if isinstance(ip, ipaddress.IPv6Address):
        zone = f"%{ip.scope_id}" if ip.scope_id and ip.is_link_local else ""
        bare = ipaddress.IPv6Address(ip.packed)  # without its zone
        return f"{ipaddress.ip_network(f'{bare}/{IPV6_PREFIX}', strict=False)}{zone}"
    return str(ipaddress.ip_network(f"{ip}/{IPV4_PREFIX}", strict=False))


def address_key(host: str) -> str:
    """The key of the per-address rate limits (handshakes, pulls, Status) for remote
    `host` (`peer_host`): the address itself, so the nodes of one LAN never share a
    bucket. '10.0.0.5' -> '10.0.0.5', '2001:db8::1' -> '2001:db8::1', a link-local
    address with its zone ('fe80::1%eth0': another link is another host), an
    IPv4-mapped IPv6 address as its IPv4 one; anything that is not an IP unchanged.
    An IPv6 address also counts towards its /64 (`subnet_key`)."""
    ip = ip_of(host)
    return host if ip is None else str(ip)


_EMBEDS_IPV4 = (ipaddress.ip_network("::/96"), ipaddress.ip_network("64:ff9b::/96"))


def subnet_key(host: str) -> str | None:
    """The IPv6 /64 whose addresses share one larger allowance (`SUBNET_SHARE`) for
    remote `host` (`peer_host`): '2001:db8::1' -> '2001:db8::/64'. None for an IPv4
    address, a loopback or link-local one (this machine; a link, where each address is
    one of its hosts), one that stands for an IPv4 host (IPv4-mapped '::ffff:a.b.c.d',
    IPv4-compatible '::a.b.c.d', NAT64 '64:ff9b::a.b.c.d'), and anything not an IP."""
    ip = ip_of(host)
    if not isinstance(ip, ipaddress.IPv6Address) or ip.is_loopback or ip.is_link_local:
        return None
    bare = ipaddress.IPv6Address(ip.packed)  # without its zone
    if any(bare in net for net in _EMBEDS_IPV4):
        return None
    return str(ipaddress.ip_network(f"{bare}/{IPV6_PREFIX}", strict=False))


IPV6_SITE_PREFIX = 48  # one IPv6 site (what one customer is routed), many /64s


def site_key(host: str) -> str | None:
    """The IPv6 /48 of remote `host` (`peer_host`) whose /64s (`host_key`) share one
    larger bound, so one site cannot take every place by its many /64s:
    '2001:db8:1:2::1' -> '2001:db8:1::/48'. None where `subnet_key` is None."""
    subnet = subnet_key(host)
    if subnet is None:
        return None
    return str(ipaddress.ip_network(subnet).supernet(new_prefix=IPV6_SITE_PREFIX))


def group_key(host: str) -> str:
    """The key by which the rules that cut the oldest waiting call of the busiest
    network (`first_message.Room`, `service.Pools`) count remote `host` (`peer_host`):
    its IPv6 site (`site_key`), so the /64s of one /48 count as one network, else its
    network (`host_key`)."""
    return site_key(host) or host_key(host)


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

    def ready(self, now: float) -> bool:
        """Whether it holds a token (spends nothing)."""
        self._refill(now)
        return self.tokens >= 1.0

    def take(self, now: float) -> bool:
        """Spend one token if there is one; False (and nothing spent) otherwise."""
        if not self.ready(now):
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
        """Spend one of `key`'s tokens; False (and nothing spent) when it has none."""
        now = self.clock()
        bucket = self.bucket(key, now)
        return bucket is not None and bucket.take(now)

    def bucket(self, key: str, now: float) -> TokenBucket | None:
        """`key`'s bucket, a full one if it had none; None when the table holds
        `max_keys` buckets that are not full (newcomers are refused)."""
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) >= self.max_keys:
                # a full bucket is the same as a new one: forget those
                self.buckets = {k: b for k, b in self.buckets.items() if not b.full(now)}
                if len(self.buckets) >= self.max_keys:
                    return None  # more active keys than the table holds: refuse newcomers
            bucket = TokenBucket(self.per_minute, self.per_minute / 60.0, self.per_minute, now)
            self.buckets[key] = bucket
        return bucket


class AddressBuckets:
    """The per-address limit of one RPC: a bucket of `per_minute` per remote address
    (`address_key`) and, for an IPv6 address, one of `SUBNET_SHARE` x `per_minute`
    per /64 (`subnet_key`). `refusal` spends a token from each, or from neither."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self.addresses = KeyedBuckets(per_minute, clock)
        self.subnets = KeyedBuckets(SUBNET_SHARE * per_minute, clock)

    def refusal(self, host: str) -> Refused | None:
        """None when remote `host` (`peer_host`) may make one more call (a token spent
        from each of its buckets); else the limit it reached, nothing spent."""
        now = self.clock()
        subnet = subnet_key(host)
        shared = None if subnet is None else self.subnets.bucket(subnet, now)
        if subnet is not None and (shared is None or not shared.ready(now)):
            return Refused(self.subnets.per_minute, subnet, subnet=True)
        key = address_key(host)
        own = self.addresses.bucket(key, now)
        if own is None or not own.take(now):
            return Refused(self.per_minute, key, subnet=False)
        if shared is not None:
            shared.take(now)
        return None


class Refused(NamedTuple):
    """A limit reached: `per_minute` calls from `key`, an address or (`subnet`) a /64."""

    per_minute: int
    key: str
    subnet: bool

    def who(self, show: Callable[[str], str] = str) -> str:
        """The caller as a refusal names it: its address, or the addresses of its /64."""
        return f"the addresses of {show(self.key)}" if self.subnet else show(self.key)


@dataclass
class RoundCounter:
    """At most `limit` events per (key, round) for rounds after `current` (this node's
    last completed round), those past `current + window` sharing the last slot; a
    round at or before `current` is finished: always allowed and never counted (the
    caller refuses it, stale, before reading anything). Counts of finished rounds are
    dropped when `current` moves on. At most `max_keys` counts are kept: while
    `current` stands still (a node waiting for its first round) the keys that come
    and go (ids churning, or a member cycling ids) would pile up, so past it the
    oldest count is forgotten (logged once a window: `logs.RepeatFilter`)."""

    limit: int
    window: int
    counts: dict[tuple[str, int], int] = field(default_factory=dict)
    current: int = 0
    max_keys: int = MAX_KEYS

    def allow(self, key: str, round: int, current: int) -> bool:
        if current != self.current:
            self.current = current
            self.counts = {k: n for k, n in self.counts.items() if k[1] > current}
        if round <= current:
            return True
        slot = (key, min(round, current + self.window))
        if self.counts.get(slot, 0) >= self.limit:
            return False
        if slot not in self.counts and len(self.counts) >= self.max_keys:
            del self.counts[next(iter(self.counts))]  # the oldest: insertion order
            log.warning(
                "push counts: over %d (sender, round) slots; forgetting the oldest", self.max_keys
            )
        self.counts[slot] = self.counts.get(slot, 0) + 1
        return True


class NodeLimits:
    """The daemon's five limits; each `check_*` raises WireError(RESOURCE_EXHAUSTED)."""

    def __init__(
        self,
        *,
        handshakes_per_minute: int,
        pushes_per_round: int,
        pulls_per_minute: int,
        rounds_ahead: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.handshakes = AddressBuckets(handshakes_per_minute, clock)
        # Leaves: as many as Hellos, in a bucket of their own (a join and its goodbye
        # never spend one budget twice), checked before a swarm secret's mac
        self.leaves = AddressBuckets(handshakes_per_minute, clock)
        self.pulls = AddressBuckets(pulls_per_minute, clock)
        self.statuses = AddressBuckets(STATUS_PER_MINUTE, clock)
        # before its first round a node reads pushes up to twice `rounds_ahead` ahead
        # (`Inbox._check_sender`): each of those rounds has its own slot
        self.pushes = RoundCounter(pushes_per_round, 2 * rounds_ahead)

    def check_handshake(self, peer: str) -> None:
        """One Handshake from `peer` (`context.peer()`), counted per `AddressBuckets`."""
        if refused := self.handshakes.refusal(peer_host(peer)):
            raise limited(
                f"more than {refused.per_minute} handshakes a minute from {refused.who()}"
            )

    def check_leave(self, peer: str) -> None:
        """One Leave from `peer` (`context.peer()`), counted per `AddressBuckets`, at the
        handshakes' rate."""
        if refused := self.leaves.refusal(peer_host(peer)):
            raise limited(f"more than {refused.per_minute} leaves a minute from {refused.who()}")

    def check_push(self, sender: str, round: int, current: int) -> None:
        """One push stream from live neighbour `sender` for `round`; `current` is this
        node's last completed round."""
        if not self.pushes.allow(sender, round, current):
            raise limited(f"more than {self.pushes.limit} pushes for round {round} from {sender!r}")

    def check_status(self, peer: str) -> None:
        """One Status request from `peer` (`context.peer()`), counted per `AddressBuckets`."""
        if refused := self.statuses.refusal(peer_host(peer)):
            raise limited(
                f"more than {refused.per_minute} Status requests a minute from {refused.who()}"
            )

    def check_pull(self, host: str) -> None:
        """One pull from remote `host` (`peer_host`), counted per `AddressBuckets`."""
        if refused := self.pulls.refusal(host):
            raise limited(f"more than {refused.per_minute} pulls a minute from {refused.who(repr)}")
