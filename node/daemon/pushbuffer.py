"""The bytes push streams buffer: one shared budget, and a fair share of it per sender.

All push streams together buffer at most `BUFFERED_MESSAGES` largest messages, bytes
counted as they arrive (`wire.ByteBudget`: beyond it `busy`, the node's load). One
sender may hold at most `SENDER_SHARE` of them at once and one remote host at most
`HOST_SHARE`, over all its streams and member ids; beyond, RESOURCE_EXHAUSTED
`rate_limited` (that sender's doing). So streams that send most of a message fast and
then stall, from one id or from many ids on one host, leave at least
`BUFFERED_MESSAGES - HOST_SHARE` largest messages free for other hosts' pushes.

An honest sender never reaches its shares: it has one push in flight to a node (the
next waits for its ack) and no message is larger than the largest (refused
`too_large` before), so with the buffer otherwise idle its push always fits. Nodes
of one lab share a host: together they may buffer `HOST_SHARE` largest messages (8
fp32 keyframes at `--max-message-mib 0`, which allows twice a keyframe).
"""

from __future__ import annotations

from declora.node.identity import shown
from declora.node.limits import limited
from declora.node.wire import ByteBudget, WireError

BUFFERED_MESSAGES = 4  # all push streams together buffer at most this many max messages
SENDER_SHARE = 1  # ...one member id at most this many (an honest one: one push at a time)
HOST_SHARE = 2  # ...one remote host at most this many, whatever ids it sends as


class PushBuffer:
    """The shared budget and what each sender and host holds of it."""

    def __init__(self, max_message: int) -> None:
        self.shared = ByteBudget(BUFFERED_MESSAGES * max_message)
        self.sender_limit = SENDER_SHARE * max_message
        self.host_limit = HOST_SHARE * max_message
        self.by_sender: dict[str, int] = {}
        self.by_host: dict[str, int] = {}

    @property
    def used(self) -> int:
        """Bytes buffered by all streams."""
        return self.shared.used

    def stream(self, host: str) -> StreamShare:
        """The budget of one push stream from remote `host` ('' unknown: no host share)."""
        return StreamShare(self, host)


def _add(table: dict[str, int], key: str, n: int) -> None:
    left = table.get(key, 0) + n
    if left > 0:
        table[key] = left
    else:
        table.pop(key, None)


class StreamShare(ByteBudget):
    """One stream's view of a `PushBuffer` (what `wire.read_stream` takes and gives):
    its bytes count against its sender (named by its header, before any data), its
    host and the shared budget."""

    def __init__(self, buffer: PushBuffer, host: str) -> None:
        super().__init__(buffer.shared.limit)
        self.buffer = buffer
        self.host = host
        self.sender = ""

    def take(self, n: int) -> None:
        buf = self.buffer
        if self.sender and buf.by_sender.get(self.sender, 0) + n > buf.sender_limit:
            raise self._refusal(f"{shown(self.sender)} already buffers", buf.sender_limit)
        if self.host and buf.by_host.get(self.host, 0) + n > buf.host_limit:
            raise self._refusal(f"pushes from {self.host} already buffer", buf.host_limit)
        buf.shared.take(n)  # `busy` when the node's buffer is full
        self.used += n
        if self.sender:
            _add(buf.by_sender, self.sender, n)
        if self.host:
            _add(buf.by_host, self.host, n)

    def give(self, n: int) -> None:
        n = min(n, self.used)
        self.used -= n
        buf = self.buffer
        buf.shared.give(n)
        if self.sender:
            _add(buf.by_sender, self.sender, -n)
        if self.host:
            _add(buf.by_host, self.host, -n)

    @staticmethod
    def _refusal(what: str, limit: int) -> WireError:
        return limited(f"{what} close to its share of this node's push buffer ({limit} bytes)")
