"""The swarm secret (`SwarmAuth`): HMAC-SHA256 over each Hello, PullRequest,
LeaveNotice and StatusRequest (with a fresh nonce: an 8-byte big-endian unix-ms
timestamp and 16 random bytes) and over each payload header together with its data.
It authenticates membership and messages but encrypts nothing.

Callers may rely on: `SwarmAuth.verify*` raise `AuthError` (never anything else for
a bad message) and remember a nonce only once its mac and timestamp passed; a MAC
covers the message type, so a signed message of one kind is never valid as another.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import ipaddress
import os
import struct
import time
from collections.abc import Callable
from typing import TypeVar

from google.protobuf.message import Message

from declora.proto import pb

NONCE_BYTES = 24  # 8-byte timestamp (unix ms, big-endian) + 16 random bytes
WINDOW_SECONDS = 120.0
MAX_NONCES = 100_000
SECRET_SPACE = " \t\n\r\x0b\x0c"  # what str.strip and bytes.strip agree is whitespace


class AuthError(Exception):
    """A message refused by the swarm secret; `counter` is its refusal counter."""

    def __init__(self, reason: str, counter: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.counter = counter


SignedT = TypeVar("SignedT", pb.Hello, pb.PullRequest, pb.LeaveNotice, pb.StatusRequest)
Signed = pb.Hello | pb.PullRequest | pb.LeaveNotice | pb.StatusRequest  # nonce + mac


def secret_text(secret: str) -> str:
    """The swarm secret as it signs: `secret` (from a flag, DECLORA_SWARM_SECRET or a
    config file) less surrounding ASCII whitespace, as a file's final newline; inner
    characters count. `SwarmAuth` strips its key the same way."""
    return secret.strip(SECRET_SPACE)


def new_nonce(now: float) -> bytes:
    """8-byte big-endian unix-ms timestamp of `now`, then 16 random bytes."""
    return struct.pack(">Q", int(now * 1000)) + os.urandom(NONCE_BYTES - 8)


def _mac_input(msg: Message) -> bytes:
    """The message type's name and its deterministic serialization with mac empty."""
    unsigned = type(msg)()
    unsigned.CopyFrom(msg)
    unsigned.ClearField("mac")
    return (
        msg.DESCRIPTOR.full_name.encode() + b"\0" + unsigned.SerializeToString(deterministic=True)
    )


def stale_reason(ahead_ms: int, window_ms: int) -> str:
    """Why a message dated `ahead_ms` after the receiver's clock (negative: before) is
    refused, worded alike for the receiver's log and the sender, which reads it as
    the peer's answer: "this node's clock" there named the sender's own."""
    side = "ahead of" if ahead_ms > 0 else "behind"
    return (
        f"its timestamp is {abs(ahead_ms) / 1000:.1f}s {side} the receiving node's clock, "
        f"outside ±{window_ms / 1000:g}s: set both machines' clocks (NTP), or it is a replay"
    )


def floor_network(source: str) -> str:
    """The network a replay floor of `source` (`auth.source_key`: an IPv4 address, an
    IPv6 /64) folds into (`SwarmAuth`): its IPv4 /16 or IPv6 /48 ('10.1.2.3' ->
    '10.1.0.0/16'); '' for a source that is no IP."""
    try:
        net = ipaddress.ip_network(source.split("%")[0], strict=False)
    except ValueError:
        return ""
    wide = 16 if net.version == 4 else 48
    return str(net if net.prefixlen <= wide else net.supernet(new_prefix=wide))


class SwarmAuth:
    """Signs and verifies messages with the swarm secret; remembers recent nonces.

    The key is `secret` less surrounding whitespace (`secret_text`), whoever passes it.
    A nonce is accepted once: while its timestamp is within `window` seconds of this
    clock it stays in the replay cache; when the cache holds `max_nonces`, the oldest
    leave it and no message from their source (`verify`'s: the caller's IPv4 address
    or IPv6 /64, `auth.source_key`) at or before their timestamp is accepted any
    more. So a holder of the secret that floods signed calls dated ahead fills the
    cache and moves only its own source's floor: honest senders, at other addresses,
    are still accepted (before, one floor for all: 101,000 signed Leaves dated 110 s
    ahead, in 54 s, had every honest Hello and Status refused as replayed). At most
    `max_nonces` sources keep a floor; beyond, the oldest kept one folds into the
    floor of its network (`floor_network`: an IPv4 /16, an IPv6 /48), and only past
    `max_nonces` such networks into the floor of every source (before, straight into
    that: a holder of the secret signing from more than `max_nonces` addresses, such
    as 127.0.0.0/8 on a node's own host, had every honest sender refused as
    replayed). The price: while such a flood overflows the cache, a
    message whose nonce left it early may be replayed once from another source
    within its `window` (a capture of it, replayed by someone on the path).
    """

    def __init__(
        self,
        secret: bytes,
        window: float = WINDOW_SECONDS,
        max_nonces: int = MAX_NONCES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = secret.strip(SECRET_SPACE.encode())
        self.window_ms = int(window * 1000)
        self.max_nonces = max_nonces
        self.clock = clock
        self._seen: set[bytes] = set()
        self._by_time: list[tuple[int, bytes, str]] = []  # heap of (ms, nonce, source)
        # source -> nonces from it at or before this time were forgotten early
        self._floors: dict[str, int] = {}
        self._networks: dict[str, int] = {}  # ...from any source of a network (folded)
        self._floor_ms = -1  # ...and from any source (networks folded when too many)

    def _mac(self, *parts: bytes) -> bytes:
        h = hmac.new(self._key, digestmod=hashlib.sha256)
        for part in parts:
            h.update(part)
        return h.digest()

    # ---------------------------------------------------- nonce + mac messages
    def sign(self, msg: SignedT) -> SignedT:
        """Give `msg` a fresh nonce and its mac (in place); returns it."""
        msg.nonce = new_nonce(self.clock())
        msg.mac = b""
        msg.mac = self._mac(_mac_input(msg))
        return msg

    def verify(self, msg: Signed, source: str = "") -> None:
        """Refuse (AuthError) a missing or bad mac, a malformed or stale nonce, a replay.
        `source`: where `msg` came from (the caller's IP; '' unknown), whose floor
        alone a forgotten nonce of it moves."""
        if not msg.mac:
            raise AuthError("no mac: the sender has no --swarm-secret", "bad_auth")
        if not hmac.compare_digest(msg.mac, self._mac(_mac_input(msg))):
            raise AuthError(
                "bad mac: the sender has another --swarm-secret, or the message was altered",
                "bad_auth",
            )
        if len(msg.nonce) != NONCE_BYTES:
            raise AuthError(f"nonce of {len(msg.nonce)} bytes, expected {NONCE_BYTES}", "bad_auth")
        sent_ms = struct.unpack(">Q", msg.nonce[:8])[0]
        now_ms = int(self.clock() * 1000)
        self._expire(now_ms)
        if abs(now_ms - sent_ms) > self.window_ms:
            raise AuthError(stale_reason(sent_ms - now_ms, self.window_ms), "stale_nonce")
        floor = max(self._floor_ms, self._floors.get(source, -1))
        if self._networks:
            floor = max(floor, self._networks.get(floor_network(source), -1))
        if msg.nonce in self._seen or sent_ms <= floor:
            raise AuthError("replayed nonce: this message was already received", "replay")
        self._remember(sent_ms, bytes(msg.nonce), source)

    @property
    def remembered(self) -> int:
        """Nonces held in the replay cache now (at most `max_nonces`)."""
        return len(self._seen)

    def _expire(self, now_ms: int) -> None:
        while self._by_time and self._by_time[0][0] < now_ms - self.window_ms:
            self._seen.discard(heapq.heappop(self._by_time)[1])

    def _remember(self, sent_ms: int, nonce: bytes, source: str) -> None:
        heapq.heappush(self._by_time, (sent_ms, nonce, source))
        self._seen.add(nonce)
        while len(self._by_time) > self.max_nonces:
            oldest_ms, oldest, where = heapq.heappop(self._by_time)
            self._seen.discard(oldest)
            floors = self._floors
            floors[where] = max(floors.pop(where, -1), oldest_ms)  # now the newest kept
            if len(floors) > self.max_nonces:  # many sources: the oldest kept folds in
                first = next(iter(floors))
                networks, network = self._networks, floor_network(first)
                networks[network] = max(networks.pop(network, -1), floors.pop(first))
                if len(networks) > self.max_nonces:  # many networks: one floor for all
                    kept_longest = next(iter(networks))
                    self._floor_ms = max(self._floor_ms, networks.pop(kept_longest))

    # ---------------------------------------------------- payloads
    def _payload_mac(self, header: pb.PayloadHeader, data: bytes) -> bytes:
        return self._mac(_mac_input(header), data)

    def sign_payload(self, header: pb.PayloadHeader, data: bytes) -> pb.PayloadHeader:
        """Set `header.mac` over the header (mac empty) and `data`; returns the header."""
        header.mac = b""
        header.mac = self._payload_mac(header, data)
        return header

    def verify_payload(self, header: pb.PayloadHeader, data: bytes) -> None:
        """Refuse (AuthError) a payload whose header mac is missing or does not cover
        this header and `data` (replays are refused by the round and seq checks)."""
        if not header.mac:
            raise AuthError("payload without mac: the sender has no --swarm-secret", "bad_auth")
        if not hmac.compare_digest(header.mac, self._payload_mac(header, data)):
            raise AuthError(
                "payload with a bad mac: the sender has another --swarm-secret, or the "
                "header or data were altered",
                "bad_auth",
            )
