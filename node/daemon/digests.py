"""Status's state digest (`status.state_digest`), hashed off the event loop once per
state (`StateDigests`): a flood of Status requests costs one hash per change of the
state, not one per request, and never reads a state that local steps are changing."""

from __future__ import annotations

import asyncio
import hashlib
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc

from declora.node.daemon.catchup import Taken
from declora.node.daemon.status import state_digest
from declora.node.dec_lora import DecLoraNode
from declora.node.wire import WireError

if TYPE_CHECKING:
    from declora.node.daemon.inbox import Inbound
    from declora.node.daemon.parts import Parts

STEP_POLL = 0.05  # seconds between looks at whether local steps have ended (`digest`)
STEP_WAIT = 10.0  # seconds a digest request waits for them, holding its Status slot


class _Chunks:
    """Stands in for the SHA-256 object of `state_digest` on the event loop: it keeps
    what it is fed (copies: `tobytes()`), to be hashed in a worker thread (`_hash`).
    `base`: the hash of the node's part, kept from an earlier digest (then only the
    inbox's part is fed)."""

    def __init__(self, base: Any = None) -> None:
        self.base = base
        self.node: list[bytes] = []
        self.inbox: list[bytes] = []
        self.feeding = self.node if base is None else self.inbox

    def update(self, data: bytes) -> None:
        self.feeding.append(bytes(data))

    def hexdigest(self) -> str:
        return ""  # hashed later, off the event loop (`_hash`)


class _Recorded:
    """What `state_digest` takes for the node: `digest(h)` feeds the node's part into
    the chunks (not when they have its hash already), then its inbox part follows."""

    def __init__(self, node: DecLoraNode[str], chunks: _Chunks) -> None:
        self.node, self.chunks = node, chunks

    def digest(self, h: Any = None) -> _Chunks:
        if self.chunks.base is None:
            self.node.digest(self.chunks)  # type: ignore[arg-type]
        self.chunks.feeding = self.chunks.inbox
        return self.chunks


def _hash(chunks: _Chunks) -> tuple[Any, str]:
    """SHA-256 of the chunks (in a worker thread): the hash of the node's part (kept
    to extend later) and the digest of the whole."""
    h = chunks.base.copy() if chunks.base is not None else hashlib.sha256()
    for data in chunks.node:
        h.update(data)
    node_part = h.copy()
    for data in chunks.inbox:
        h.update(data)
    return node_part, h.hexdigest()


class _Same:
    """Stands for one object in a digest's keys without keeping it alive: equal to a
    `_Same` of the very same object while that object lives (a weak reference; once it
    is collected nothing equals it, so a new object at its address is never taken for
    it). An object that takes no weak reference (None) is held and compared by
    identity."""

    __slots__ = ("get", "weak")

    def __init__(self, obj: object) -> None:
        try:
            self.get: Callable[[], object] = weakref.ref(obj)
            self.weak = True
        except TypeError:
            self.get, self.weak = (lambda: obj), False

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Same):
            return NotImplemented
        mine = self.get()
        return mine is other.get() and (mine is not None or not (self.weak or other.weak))

    __hash__ = None  # type: ignore[assignment]


def _node_keys(parts: Parts) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """What says the node's part of the digest may have changed, cheaply: (what only the
    event loop changes, what local steps change too), the objects among them by
    identity (`_Same`: the keys keep no array alive). Every change of the node's state
    moves one of these (`status.state_digest`): steps move the trainer's step, a mix
    and a state taken move the round or seq, a neighbour joining or dropped changes the
    copies, a held-back step (its gradients) or Chebyshev's place change their
    objects."""
    node, progress = parts.node, parts.progress
    copies = sorted(node.gossip.peers.items(), key=lambda kv: repr(kv[0]))
    cheb, deferred = node.chebyshev, node.trainer.deferred
    loop = (
        progress.round,
        progress.seq,
        _Same(node.gossip.public),
        tuple((repr(pid), _Same(copy)) for pid, copy in copies),
    )
    held_back = None if deferred is None else tuple(map(_Same, deferred[0]))
    steps = (node.trainer.step, cheb.k, _Same(cheb.older), held_back)
    return loop, steps


def _inbox_keys(inbox: Mapping[int, Mapping[str, Inbound]]) -> tuple[Any, ...]:
    """The queued payloads, by identity (`_Same`)."""
    return tuple((r, pid, _Same(inbox[r][pid])) for r in sorted(inbox) for pid in sorted(inbox[r]))


@dataclass
class _Digest:
    """One digest of the state: the keys it was taken at, the adapter its node's part
    holds (`adapter`: a copy of the first chunk `DecLoraNode.digest` feeds), the local
    steps it was found to precede (`before`: a `stepping` taking, not kept alive), and
    (once hashed) the hash of its node's part and its value."""

    loop: tuple[Any, ...]
    steps: tuple[Any, ...]
    adapter: bytes
    inbox: tuple[Any, ...]
    done: asyncio.Future[tuple[Any, str]]
    before: _Same | None = None

    def usable(self) -> bool:
        """Hashed or being hashed (a failed hash is taken again)."""
        done = self.done
        return not done.done() or (not done.cancelled() and done.exception() is None)

    def precedes(self, taken: Taken) -> bool:
        """Whether its node's part is the state `taken` when local steps began: same
        adapter (compared, not hashed), and the rest unchanged (`_node_keys`: only a
        step, a mix or a state taken change it, and only steps run in between)."""
        if self.before is None or self.before.get() is not taken:
            if not self.adapter or taken.vector.tobytes() != self.adapter:
                return False
            self.before = _Same(taken)
        return True


class StateDigests:
    """Status's state digest (`status.state_digest`), hashed in a worker thread and
    kept: requests for an unchanged state (same round, seq, step, copies, queued
    payloads: `_node_keys`, `_inbox_keys`) share one hash; a new payload queued extends
    the node's part instead of hashing it again.

    What is hashed is copied on the event loop first, so the hash never sees a state
    the loop changes meanwhile. While local steps run in a worker thread
    (`StateTransfer.stepping`) the node is not read at all: as a Pull serves the state
    before the steps, the digest is the one of the state before them (a node's part
    taken before them, `_Digest.precedes`); without one, the request waits for the
    steps to end, at most `STEP_WAIT` seconds (then UNAVAILABLE, counted `busy`)."""

    def __init__(self) -> None:
        self.last: _Digest | None = None

    async def digest(self, parts: Parts) -> str:
        waited = 0.0
        while True:
            loop, steps = _node_keys(parts)
            inbox = _inbox_keys(parts.inbox.queued)
            taken = parts.transfer.published  # local steps are running
            last = self.last if self.last is not None and self.last.usable() else None
            if last is None or last.loop != loop:
                same_node = False
            elif taken is None:
                same_node = last.steps == steps
            else:
                same_node = last.precedes(taken)
            if last is not None and same_node and last.inbox == inbox:
                return (await asyncio.shield(last.done))[1]
            if taken is not None and not same_node:  # no digest of the state before them
                if waited >= STEP_WAIT:  # the request's Status slot is not held longer
                    raise WireError(
                        grpc.StatusCode.UNAVAILABLE,
                        f"local steps have run for over {STEP_WAIT:g}s: no state digest "
                        "until they end, ask again",
                        "busy",
                    )
                await asyncio.sleep(STEP_POLL)
                waited += STEP_POLL
                continue
            if last is not None and same_node:
                if not last.done.done():
                    await asyncio.shield(last.done)  # its node's part, then extend it
                    continue
                chunks = _Chunks(last.done.result()[0])
            else:
                chunks = _Chunks()
            # copies of what is hashed, taken on the event loop: nothing changes them
            state_digest(_Recorded(parts.node, chunks), parts.inbox.queued)  # type: ignore[arg-type]
            done = asyncio.ensure_future(asyncio.to_thread(_hash, chunks))
            if last is not None and same_node:  # the node's part is the one kept
                kept = (last.loop, last.steps, last.adapter)
                self.last = _Digest(*kept, inbox, done, before=last.before)
            else:
                adapter = chunks.node[0] if chunks.node else b""
                self.last = _Digest(loop, steps, adapter, inbox, done)
            return (await asyncio.shield(done))[1]
