"""The bytes push streams buffer: a reserved share per live neighbour, one shared pool,
and a fair share of the pool per sender and per network.

A live neighbour (pushes from any other sender are refused at the header) buffers its
pushes in its own reservation: one largest message (`RESERVED_SHARE`), from a reserve
of `--max-neighbors` largest messages, so at most that many live ids exist to use it
and none can take another's room. The pool holds what a reservation cannot: the rest
of a push whose sender was dropped while it arrived. All its streams together buffer
at most `BUFFERED_MESSAGES` largest messages (`wire.ByteBudget`: beyond it `busy`);
there one sender may hold at most `SENDER_SHARE` of them and one network
(`limits.host_key`: a /24 for IPv4, a /64 for IPv6) at most `HOST_SHARE`; beyond,
RESOURCE_EXHAUSTED `rate_limited`. Bytes count as they arrive. So memory stays at most
(`--max-neighbors` + `BUFFERED_MESSAGES`) largest messages, and streams that send most
of a message fast and then stall, from any number of ids and addresses, hold only
their own senders' reservations.

An honest sender never reaches its share: it has one push in flight to a node (the
next waits for its ack) and no message is larger than the largest (refused
`too_large` before), so its push always fits its reservation, at its first round and
after a restart as later, and however many neighbours share its network (a LAN, a
one-host lab).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from declora.node.identity import shown
from declora.node.limits import host_key, limited
from declora.node.wire import ByteBudget, WireError

if TYPE_CHECKING:
    from collections.abc import Callable

    from declora.node.daemon.peers import Peer

BUFFERED_MESSAGES = 4  # the pool: senders dropped mid-push together, this many max messages
SENDER_SHARE = 1  # ...one member id at most this many (an honest one: one push at a time)
HOST_SHARE = 2  # ...one network at most this many, whatever ids it sends as
RESERVED_SHARE = 1  # each live neighbour's own room (= SENDER_SHARE: all it may hold)


class PushBuffer:
    """The reserve, the shared pool and what each sender and network holds."""

    def __init__(self, max_message: int, neighbors: int = 0) -> None:
        self.shared = ByteBudget(BUFFERED_MESSAGES * max_message)
        self.reserve = ByteBudget(neighbors * RESERVED_SHARE * max_message)
        self.sender_limit = SENDER_SHARE * max_message
        self.host_limit = HOST_SHARE * max_message
        self.by_sender: dict[str, int] = {}  # pool and reserve
        self.by_host: dict[str, int] = {}  # the pool only

    @property
    def used(self) -> int:
        """Bytes buffered by all streams."""
        return self.shared.used + self.reserve.used

    @property
    def limit(self) -> int:
        """The most all streams may buffer together."""
        return self.shared.limit + self.reserve.limit

    def stream(self, host: str) -> StreamShare:
        """The budget of one push stream from remote `host` ('' unknown: no host share)."""
        return StreamShare(self, host_key(host) if host else "")


def _add(table: dict[str, int], key: str, n: int) -> None:
    left = table.get(key, 0) + n
    if left > 0:
        table[key] = left
    else:
        table.pop(key, None)


class StreamShare(ByteBudget):
    """One stream's view of a `PushBuffer` (what `wire.read_stream` takes and gives):
    its bytes count against its sender (named by its header, before any data: `peer`),
    and against the sender's reservation while it is a live neighbour, else
    against its network and the pool. `on_take(n)` (if set) is told of bytes taken."""

    def __init__(self, buffer: PushBuffer, host: str) -> None:
        super().__init__(buffer.limit)
        self.buffer = buffer
        self.host = host
        self.sender = ""
        self.peer: Peer | None = None  # the sender's entry, set with `sender`
        self.pooled = 0  # of `used`, in the pool (the rest: in the reserve)
        self.on_take: Callable[[int], None] | None = None

    def take(self, n: int) -> None:
        buf = self.buffer
        if self.sender and buf.by_sender.get(self.sender, 0) + n > buf.sender_limit:
            raise self._refusal(f"{shown(self.sender)} already buffers", buf.sender_limit)
        if self._reserved() and buf.reserve.used + n <= buf.reserve.limit:
            buf.reserve.take(n)
        else:
            if self.host and buf.by_host.get(self.host, 0) + n > buf.host_limit:
                raise self._refusal(f"pushes from {self.host} already buffer", buf.host_limit)
            buf.shared.take(n)  # `busy` when the pool is full
            self.pooled += n
            if self.host:
                _add(buf.by_host, self.host, n)
        self.used += n
        if self.sender:
            _add(buf.by_sender, self.sender, n)
        if self.on_take is not None:
            self.on_take(n)

    def _reserved(self) -> bool:
        """Whether the sender may use a reservation now: a live neighbour."""
        peer = self.peer
        return peer is not None and peer.live

    def give(self, n: int) -> None:
        n = min(n, self.used)
        pooled = min(n, self.pooled)
        self.used -= n
        self.pooled -= pooled
        buf = self.buffer
        buf.shared.give(pooled)
        buf.reserve.give(n - pooled)
        if self.sender:
            _add(buf.by_sender, self.sender, -n)
        if self.host:
            _add(buf.by_host, self.host, -pooled)

    @staticmethod
    def _refusal(what: str, limit: int) -> WireError:
        return limited(f"{what} close to its share of this node's push buffer ({limit} bytes)")
