"""One round's exchange: push this round's payload, accept the neighbours', wait, mix.

Invariants callers may rely on:
- nothing received touches state before it passed every check (`wire.read_stream`,
  the sender's handshake, the round window, sequence checks, and the core's
  `check_payload`/`check_tracker`, run off the event loop); state is re-checked after
  that await; a refused message changes nothing and is counted by reason;
- a round never waits longer than `round_deadline` for a neighbour; a neighbour that
  misses it leaves the live set and returns after a successful handshake;
- public copies stay in step: a neighbour that is new, restarted or out of step gets
  a keyframe (the full public copy) instead of a delta;
- mixing uses Metropolis-Hastings weights over the neighbours that delivered, from
  the live degrees their messages carry;
- a node behind a live neighbour skips ahead (`align_round`), or, before its first
  round, takes the most advanced neighbour's full state (`catch_up`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from declora.node import faults
from declora.node.adapter import AdapterSchema
from declora.node.codecs import make_codec
from declora.node.daemon.handshake import Auth, Handshaker
from declora.node.daemon.peers import Peer, PeerTable
from declora.node.daemon.state import Progress
from declora.node.daemon.status import Counters, RoundReport
from declora.node.dec_lora import DecLoraNode
from declora.node.gossip import GossipError, update_scale
from declora.node.limits import NodeLimits
from declora.node.metrics import NodeMetrics
from declora.node.mixing import local_mh_weights
from declora.node.settings import NodeSettings
from declora.node.wire import WireError, chunks, make_header, read_stream
from declora.proto import pb

log = logging.getLogger(__name__)

MAX_ROUNDS_AHEAD = 8


@dataclass
class Inbound:
    """A neighbour's checked payload, queued for the mix of its round."""

    kind: int
    vector: np.ndarray
    degree: int
    seq: int
    scale: float = 1.0  # update_scale of the sender's codec (deltas only)
    tracker: np.ndarray | None = None  # the sender's z (gradient tracking), checked


@dataclass
class Identity:
    """What every payload header carries about this node and its adapter."""

    node_id: str
    swarm_id: str
    fingerprint: str
    schema: AdapterSchema
    codec: str


class Exchange:
    """The round protocol of one node over its peer table."""

    def __init__(
        self,
        settings: NodeSettings,
        identity: Identity,
        node: DecLoraNode[str],
        progress: Progress,
        peers: PeerTable,
        handshaker: Handshaker,
        auth: Auth,
        limits: NodeLimits,
        counters: Counters,
        report: RoundReport,
        metrics: NodeMetrics,
    ) -> None:
        self.settings = settings
        self.me = identity
        self.node = node
        self.progress = progress
        self.peers = peers
        self.handshaker = handshaker
        self.auth = auth
        self.limits = limits
        self.counters = counters
        self.report = report
        self.metrics = metrics
        self.max_bytes = settings.max_message_mib * 1024 * 1024
        self.inbox: dict[int, dict[str, Inbound]] = {}

    # ------------------------------------------------------------ one round
    async def exchange(self, r: int) -> None:
        """Push round `r`'s payload to every live neighbour, wait for theirs, mix."""
        faults.crash_point("before_send")
        delta = self.node.outgoing()
        tracker = self.node.tracker_outgoing() or b""  # after outgoing: the rng's order
        message = delta + tracker if tracker else delta
        self.progress.seq += 1
        live = self.peers.live
        degree = len(live)
        deadline = time.monotonic() + self.settings.round_deadline
        crc = zlib.crc32(message)
        t = len(tracker)
        await asyncio.gather(*(self.push(p, r, message, degree, crc, t) for p in live))
        faults.crash_point("after_send")
        await self.wait_for(r, deadline)
        self.mix(r, degree)

    def align_round(self) -> None:
        """Skip ahead to the most advanced live neighbour's round (re-join after a fault).

        In step, no live neighbour has completed more rounds than this node at the
        start of a round (each waits for this node's payload); one that has was cut
        off (partition, stall, restart). Skipping ahead keeps this node's own adapter
        and loses only the skipped rounds' local steps.
        """
        ahead = max((p.round for p in self.peers.live), default=0)
        if ahead > self.progress.round:
            log.warning(
                "neighbours are at round %d: skipping ahead from %d", ahead, self.progress.round
            )
            self.progress.round = ahead

    async def wait_for(self, r: int, deadline: float) -> None:
        """Until every live neighbour's round-r payload is in, or the deadline."""
        while True:
            got = self.inbox.get(r, {})
            # A neighbour that already completed round r without us sends no round-r
            # payload: it is mixed again once this node has aligned (`align_round`).
            waiting = [p for p in self.peers.live if p.node_id not in got and p.round < r]
            if not waiting or self.progress.stop_requested:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                for p in waiting:
                    p.missed += 1
                    self.peers.drop(
                        p, f"no payload for round {r} within {self.settings.round_deadline:g}s"
                    )
                return
            self.progress.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.progress.arrived.wait(), timeout=min(left, 0.5))

    def mix(self, r: int, own_degree: int) -> None:
        """Apply round r's payloads and mix with MH weights over those who delivered."""
        arrived = self.inbox.pop(r, {})
        degrees: dict[str, int] = {}
        for pid in sorted(arrived):
            msg = arrived[pid]
            peer = self.peers.get(pid)
            if peer is None or not peer.live:
                continue
            try:
                if msg.kind == pb.PAYLOAD_KIND_DELTA:
                    self.node.accept_delta(pid, msg.vector, msg.scale)
                else:
                    self.node.accept_keyframe(pid, msg.vector)
                if msg.tracker is not None:
                    self.node.receive_tracker(pid, msg.tracker)
            except GossipError as exc:
                self.peers.drop(peer, str(exc))
                continue
            degrees[pid] = max(msg.degree, 1)
            peer.degree = msg.degree
        self_w, weights = local_mh_weights(own_degree, degrees)
        self.node.mix(weights)
        self.report.self_weight = self_w
        for p in self.peers.all():
            p.weight = weights.get(p.node_id, 0.0)
        for old in [k for k in self.inbox if k <= r]:
            del self.inbox[old]
        self.peers.drop_leaving()

    def on_leave(self, peer: Peer, why: str) -> None:
        """A neighbour said goodbye; what it sent for the round in progress still counts."""
        has_payload = peer.node_id in self.inbox.get(self.progress.round + 1, {})
        self.peers.leave(peer, why, after_mix=self.progress.in_round and peer.live and has_payload)
        self.progress.wake()

    # ------------------------------------------------------------ sending
    def _header(
        self, r: int, kind: int, data: bytes, degree: int, crc: int | None, tracker_bytes: int
    ) -> pb.PayloadHeader:
        header = make_header(
            tracker_bytes=tracker_bytes,
            crc32=crc,
            sender_id=self.me.node_id,
            swarm_id=self.me.swarm_id,
            fingerprint=self.me.fingerprint,
            round=r,
            sender_degree=degree,
            kind=kind,
            codec=self.me.codec if kind == pb.PAYLOAD_KIND_DELTA else "fp32",
            seq=self.progress.seq,
            data=data,
            schema=self.me.schema,
        )
        return self.auth.sign_payload(header, data)

    async def push_one(
        self,
        peer: Peer,
        r: int,
        kind: int,
        data: bytes,
        degree: int,
        crc: int | None = None,
        tracker_bytes: int = 0,
    ) -> pb.PushAck:
        """Stream `data` (an adapter message, then `tracker_bytes` of z) to `peer`."""
        header = self._header(r, kind, data, degree, crc, tracker_bytes)
        stream: Any = chunks(header, data, self.settings.chunk_kib * 1024)
        if faults.armed("mid_stream"):
            stream = _crash_mid_stream(stream)
        stub = self.peers.stub(peer)
        ack: pb.PushAck = await stub.Push(stream, timeout=self.settings.round_deadline)
        if ack.accepted:
            peer.bytes_sent += len(data)
            self.node.bytes_sent += len(data)
            self.metrics.bytes_sent.inc(len(data))
        return ack

    async def push(
        self,
        peer: Peer,
        r: int,
        message: bytes,
        degree: int,
        crc: int,
        tracker_bytes: int = 0,
        retry: bool = True,
    ) -> None:
        """Send this round's payload `message` (CRC `crc`): the adapter delta, then
        `tracker_bytes` of the round's z (gradient tracking). A keyframe replaces the
        delta when the neighbour is out of step.

        A refusal for being out of range or unknown renews the handshake instead of
        dropping the neighbour: the renewed round aligns the two at the next round
        start (`align_round`), and an unknown sender (the receiver restarted, or has
        not finished its side of the handshake) retries once.
        """
        try:
            t = tracker_bytes
            if not peer.send_keyframe:
                ack = await self.push_one(peer, r, pb.PAYLOAD_KIND_DELTA, message, degree, crc, t)
                if ack.accepted or not ack.need_keyframe:
                    if not ack.accepted:
                        log.info("%s refused round %d: %s", peer.node_id, r, ack.reason)
                    return
            keyframe = self.node.keyframe() + message[len(message) - t :]
            ack = await self.push_one(peer, r, pb.PAYLOAD_KIND_KEYFRAME, keyframe, degree, None, t)
            self.counters.keyframes_sent += 1
            peer.send_keyframe = not ack.accepted
            if not ack.accepted:
                log.info("%s refused a keyframe: %s", peer.node_id, ack.reason)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            renew = code in (grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.UNAUTHENTICATED)
            stopping = self.progress.stop_requested
            if renew and not stopping and await self.handshaker.dial(peer.address) is not None:
                log.info("%s refused round %d (%s): handshake renewed", peer.node_id, r, code.name)
                if code == grpc.StatusCode.UNAUTHENTICATED and retry:
                    await self.push(peer, r, message, degree, crc, tracker_bytes, retry=False)
                return
            self.peers.drop(peer, f"push failed: {code.name} {exc.details() or ''}".strip())
        except Exception:  # one neighbour's failure never takes the node down
            log.exception("push to %s failed unexpectedly", peer.node_id)
            self.peers.drop(peer, "push failed unexpectedly (traceback above)")

    # ------------------------------------------------------------ receiving
    async def receive(self, stream: AsyncIterator[pb.Chunk]) -> pb.PushAck:
        """Validate, then queue one payload for the mix of its round (raises WireError)."""
        me = self.me
        payload = await read_stream(
            stream,
            swarm_id=me.swarm_id,
            fingerprint=me.fingerprint,
            schema=me.schema,
            max_bytes=self.max_bytes,
            auth=self.auth.secret,
        )
        h = payload.header
        if h.kind == pb.PAYLOAD_KIND_STATE:
            raise WireError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "a STATE payload is served by Pull, never pushed",
                "bad_kind",
            )
        peer = self.peers.get(h.sender_id)
        if peer is None or not peer.live:
            raise WireError(
                grpc.StatusCode.UNAUTHENTICATED,
                f"{h.sender_id!r} has not shaken hands with {me.node_id!r}",
                "no_handshake",
            )
        current = self.progress.round
        self.limits.check_push(peer.node_id, int(h.round), current)
        # Before its first round this node may still catch up (`catch_up`) while a
        # neighbour ahead already pushes the rounds after its handshake round.
        base = max(current, peer.round) if self.progress.before_first_round else current
        if h.round <= current or h.round > base + MAX_ROUNDS_AHEAD:
            # Refused unchanged: the sender's next delta fails the seq check below, so
            # it resyncs by keyframe; its renewed handshake tells us its round.
            raise WireError(
                grpc.StatusCode.OUT_OF_RANGE,
                f"round {h.round} outside ({current}, {base + MAX_ROUNDS_AHEAD}]",
                "stale_round" if h.round <= current else "future_round",
            )
        if h.kind == pb.PAYLOAD_KIND_DELTA and (
            peer.expected_seq is None or h.seq != peer.expected_seq
        ):
            return pb.PushAck(
                accepted=False, reason="out of step: send a keyframe", need_keyframe=True
            )
        if h.tracker_bytes and self.node.tracker is None:
            raise WireError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "a gradient-tracking message, but this node does not track",
                "bad_tracking",
            )
        try:  # decoding a large payload must not stall the event loop
            vec = await asyncio.to_thread(
                self.node.check_payload, peer.node_id, payload.adapter, h.codec
            )
            z = None
            if h.tracker_bytes:
                z = await asyncio.to_thread(self.node.check_tracker, peer.node_id, payload.tracker)
        except GossipError as exc:
            raise WireError(grpc.StatusCode.INVALID_ARGUMENT, str(exc), "bad_values") from exc
        in_step = h.kind != pb.PAYLOAD_KIND_DELTA or peer.expected_seq == h.seq
        if not peer.live or h.round <= self.progress.round or not in_step:  # moved meanwhile
            raise WireError(
                grpc.StatusCode.ABORTED, "state moved on while the payload was checked", "raced"
            )
        self.inbox.setdefault(int(h.round), {})[peer.node_id] = Inbound(
            int(h.kind), vec, int(h.sender_degree), int(h.seq), update_scale(h.codec), z
        )
        peer.round = int(h.round) - 1  # what the sender has completed: aligns rounds
        peer.expected_seq = int(h.seq) + 1
        peer.bytes_received += len(payload.data)
        peer.last_seen = time.time()
        self.node.bytes_received += len(payload.data)
        self.metrics.bytes_received.inc(len(payload.data))
        self.progress.wake()
        return pb.PushAck(accepted=True)

    # ------------------------------------------------------------ full state
    def state_chunks(self, kind: int) -> Iterator[pb.Chunk]:
        """This node's adapter (STATE) or public copy (KEYFRAME) as a signed stream."""
        if kind == pb.PAYLOAD_KIND_STATE:
            data = make_codec("fp32").encode(self.node.vector(), np.random.default_rng(0))
        else:
            data = self.node.keyframe()
        header = make_header(
            sender_id=self.me.node_id,
            swarm_id=self.me.swarm_id,
            fingerprint=self.me.fingerprint,
            round=self.progress.round,
            sender_degree=len(self.peers.live),
            kind=kind,
            codec="fp32",
            seq=self.progress.seq,
            data=data,
            schema=self.me.schema,
        )
        self.auth.sign_payload(header, data)
        return chunks(header, data, self.settings.chunk_kib * 1024)

    async def catch_up(self) -> None:
        """A node behind its neighbours starts from the most advanced one's full state."""
        ahead = max(self.peers.live, key=lambda p: p.round, default=None)
        if ahead is None or ahead.round <= self.progress.round:
            return
        me = self.me
        request = pb.PullRequest(
            node_id=me.node_id, swarm_id=me.swarm_id, kind=pb.PAYLOAD_KIND_STATE
        )
        timeout = max(self.settings.round_deadline, 30)
        stream = self.peers.stub(ahead).Pull(self.auth.sign(request), timeout=timeout)
        payload = await read_stream(
            stream,
            swarm_id=me.swarm_id,
            fingerprint=me.fingerprint,
            schema=me.schema,
            max_bytes=self.max_bytes,
            auth=self.auth.secret,
        )
        vec = self.node.check_payload(ahead.node_id, payload.data)
        self.node.take_state(vec)
        self.peers.forget_all_copies()
        self.progress.round = int(payload.header.round)
        self.progress.seq += 1  # our public copy jumped: peers must take a keyframe
        log.info(
            "caught up from %s: starting after its round %d", ahead.node_id, self.progress.round
        )


async def _crash_mid_stream(stream: Iterator[pb.Chunk]) -> AsyncIterator[pb.Chunk]:
    """Pass the header and first data chunk, give them time to leave, then crash."""
    for i, chunk in enumerate(stream):
        if i == 2:
            await asyncio.sleep(0.3)
            faults.crash_point("mid_stream")
        yield chunk
