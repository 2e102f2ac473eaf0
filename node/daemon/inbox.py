"""Receiving pushes: every check before a neighbour's payload is queued for its round.

Invariants callers may rely on:
- nothing received touches state before it passed every check (`wire.read_stream`,
  the sender's handshake and session, the round window, sequence checks, and the
  core's `check_payload` or `check_keyframe`, `check_tracker` and `check_pair`, run
  off the event loop); state is re-checked after that await; a refused message
  changes nothing and is counted by reason;
- before any data of a push is buffered, its header must name a live neighbour, carry
  the session token this node gave it and this node's id, match the caller's
  certificate (mTLS), and fit the per-round push limit; a neighbour has at most
  `STREAMS_PER_PEER` pushes open at once, a stream silent for `stream_idle_seconds`
  or slower than `PUSH_PACE` is cut, and all streams together buffer at most
  `BUFFERED_MESSAGES` messages, counting the bytes that arrived (not the announced
  size), so streams that trickle hold what they sent, and only for a bounded time;
  a live neighbour's pushes use a reservation of their own, and one sender, and one
  remote network, may hold only a share of the rest (`pushbuffer`);
- the bytes of a push arriving at `PUSH_PACE` count as its sender's activity (its
  slot is not released as silent while they arrive, `_active`);
- a peer's values are bounded, not only finite (`DecLoraNode.check_payload`);
- only a validated payload sets a neighbour's (verified) round, for the copy that
  payload followed (`RoundQueue.verified_round`); a push is queued only onto the copy
  it followed: one whose sender's copy was forgotten or restarted at the init
  (`Peer.copy`) after its header was checked (a restarted process's Hello admitted
  while its old process's push was checked) is refused `raced`; the queue's own
  rules: `roundqueue`;
- once the node stops (`stop`), a push still arriving is read no further: it is
  answered not accepted (`STOPPING`) within the server's grace, so gRPC cancels no call
  under its handler (that logged a CancelledError traceback at exit).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

import grpc
import numpy as np

from declora.node.daemon.admission import CLI_CERT
from declora.node.daemon.auth import Auth
from declora.node.daemon.peers import TOKEN_BYTES, Peer, PeerTable
from declora.node.daemon.pushbuffer import PushBuffer, StreamShare
from declora.node.daemon.roundqueue import Inbound, RoundQueue
from declora.node.daemon.state import Identity, Progress
from declora.node.dec_lora import DecLoraNode
from declora.node.gossip import GossipError, update_scale
from declora.node.identity import MAX_DEGREE, MAX_ROUND, MAX_SEQ, shown
from declora.node.limits import NodeLimits
from declora.node.metrics import NodeMetrics
from declora.node.settings import NodeSettings
from declora.node.wire import MAX_CODEC, Pace, Payload, WireError, read_stream, tensor_meta
from declora.proto import pb

log = logging.getLogger(__name__)

MAX_ROUNDS_AHEAD = 8
STREAMS_PER_PEER = 2  # push streams one neighbour may hold open at once
# A push must end within 30 s, or its announced size at 32 KiB/s (256 kbit/s) when that
# is longer (and never before `--stream-idle-seconds`). An honest push is one message
# sent at link speed: 256 kbit/s is well below the links a swarm trains over (a
# 4 MB fp32 keyframe, about a million LoRA parameters, then takes 2 minutes, twice the
# default `--round-deadline` after which its sender gives up anyway), and 30 s is far
# beyond the round trip of a small delta. A trickle (a byte every few seconds, never
# idle long enough to be cut as idle) is cut then (`slow_stream`).
PUSH_PACE = Pace(min_seconds=30.0, bytes_per_second=32 * 1024)
MAC_BYTES = 32  # HMAC-SHA256
STOPPING = "this node is stopping"  # the reason of a push's ack when the node stopped


def header_bytes(me: Identity) -> int:
    """Bytes of the largest correct push header for this node's adapter, as its Chunk:
    one `TensorMeta` per tensor of `me.schema` (what `wire.check_header` requires), 64-
    character ids, the longest codec, every number at its largest, a MAC."""
    top = 2**64 - 1
    header = pb.PayloadHeader(
        sender_id="x" * 64,
        swarm_id=me.swarm_id,
        fingerprint=me.fingerprint,
        round=top,
        sender_degree=2**32 - 1,
        kind=pb.PAYLOAD_KIND_KEYFRAME,
        codec="x" * MAX_CODEC,
        seq=top,
        total_bytes=top,
        crc32=2**32 - 1,
        tensors=tensor_meta(me.schema),
        mac=b"x" * MAC_BYTES,
        tracker_bytes=top,
        session=b"x" * TOKEN_BYTES,
        receiver_id="x" * 64,
    )
    return pb.Chunk(header=header).ByteSize()


def max_message_bytes(settings: NodeSettings, numel: int) -> int:
    """`--max-message-mib`, or (0) what this adapter needs: a fp32 keyframe and a fp32
    tracking message with headroom (twice that, plus 1 MiB)."""
    if settings.max_message_mib:
        return settings.max_message_mib * 1024 * 1024
    return 2 * (2 * 4 * numel + 4096) + (1 << 20)


class Inbox(RoundQueue):
    """The checks that admit a push, and its payload queued by round (`RoundQueue`)."""

    def __init__(
        self,
        settings: NodeSettings,
        identity: Identity,
        node: DecLoraNode[str],
        progress: Progress,
        peers: PeerTable,
        auth: Auth,
        limits: NodeLimits,
        metrics: NodeMetrics,
    ) -> None:
        super().__init__(peers)
        self.settings = settings
        self.me = identity
        self.node = node
        self.progress = progress
        self.auth = auth
        self.limits = limits
        self.metrics = metrics
        self.max_bytes = max_message_bytes(settings, identity.schema.numel)
        self.budget = PushBuffer(self.max_bytes, settings.max_neighbors)
        self.open_streams: dict[str, int] = {}
        self.stopped = False
        self.reading: set[asyncio.Task[object]] = set()  # handlers reading a push now

    def stop(self) -> None:
        """The node stops: pushes still arriving end now, and later ones at once, each
        answered not accepted (`STOPPING`); one line says how many were cut. Once."""
        if self.stopped:
            return
        self.stopped = True
        if self.reading:
            log.info("stopping: %d push(es) still arriving, not read", len(self.reading))
        for task in self.reading:
            task.cancel()

    def _check_sender(self, h: pb.PayloadHeader, cert_name: str | None) -> Peer:
        """Header-level checks, before any data is buffered (raises WireError)."""
        me = self.me
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
                f"{shown(h.sender_id)} has not shaken hands with {me.node_id!r}",
                "no_handshake",
            )
        if not peer.token_ok(h.session) or h.receiver_id != me.node_id:
            raise WireError(
                grpc.StatusCode.UNAUTHENTICATED,
                f"a push in the name of {shown(h.sender_id)} without its session with "
                f"{me.node_id!r}: renew the handshake",
                "bad_session",
            )
        if cert_name is not None and (cert_name != h.sender_id or cert_name == CLI_CERT):
            raise WireError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"a push in the name of {shown(h.sender_id)} from the certificate of "
                f"{shown(cert_name)}",
                "bad_identity",
            )
        if self.open_streams.get(peer.node_id, 0) >= STREAMS_PER_PEER:
            raise WireError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{shown(h.sender_id)} already has {STREAMS_PER_PEER} pushes open",
                "rate_limited",
            )
        if h.sender_degree > MAX_DEGREE or h.seq > MAX_SEQ:
            raise WireError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"degree {h.sender_degree} or seq {h.seq} out of range",
                "malformed",
            )
        current = self.progress.round
        # Before its first round this node may still catch up (`catch_up`) while a
        # neighbour ahead already pushes the rounds after its handshake round.
        claimed = min(peer.claimed_round, current + MAX_ROUNDS_AHEAD)
        first = self.progress.before_first_round
        base = max(current, self.verified_round(peer), claimed) if first else current
        if h.round <= current or h.round > base + MAX_ROUNDS_AHEAD:
            # Refused unchanged: the sender's next delta fails the seq check below, so
            # it resyncs by keyframe; its renewed handshake tells us its round.
            raise WireError(
                grpc.StatusCode.OUT_OF_RANGE,
                f"round {h.round} outside ({current}, {base + MAX_ROUNDS_AHEAD}]",
                "stale_round" if h.round <= current else "future_round",
            )
        # only pushes it would read count: a stale or far-ahead one spends nothing
        self.limits.check_push(peer.node_id, min(int(h.round), MAX_ROUND), current)
        if h.tracker_bytes and self.node.tracker is None:
            raise WireError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "a gradient-tracking message, but this node does not track",
                "bad_tracking",
            )
        return peer

    async def receive(
        self, stream: AsyncIterator[pb.Chunk], cert_name: str | None = None, host: str = ""
    ) -> pb.PushAck:
        """Validate, then queue one payload for the mix of its round (raises WireError).

        `cert_name`: the common name of the caller's certificate under mTLS; `host`:
        the caller's remote host (its share of the push buffer; '' unknown)."""
        held: list[str] = []
        share = self.budget.stream(host)

        copy: list[int] = []  # the sender's `Peer.copy` when its header was checked

        def on_header(h: pb.PayloadHeader) -> None:
            peer = self._check_sender(h, cert_name)
            copy.append(peer.copy)
            self.open_streams[peer.node_id] = self.open_streams.get(peer.node_id, 0) + 1
            held.append(peer.node_id)
            share.sender, share.peer = peer.node_id, peer
            share.on_take = lambda n: self._active(peer, n)

        try:
            payload = await self._read(stream, on_header, share)
            if payload is None:
                return pb.PushAck(accepted=False, reason=STOPPING)
            return await self._accept(payload, copy[0])
        finally:
            for pid in held:
                left = self.open_streams.get(pid, 1) - 1
                if left > 0:
                    self.open_streams[pid] = left
                else:
                    self.open_streams.pop(pid, None)

    async def _read(
        self,
        stream: AsyncIterator[pb.Chunk],
        on_header: Callable[[pb.PayloadHeader], None],
        share: StreamShare,
    ) -> Payload | None:
        """One push's checked payload (`wire.read_stream`); None once the node stopped
        (`stop`), before or while it arrived."""
        task = asyncio.current_task()
        if self.stopped or task is None:
            return None
        self.reading.add(task)
        me = self.me
        try:
            return await read_stream(
                stream,
                swarm_id=me.swarm_id,
                fingerprint=me.fingerprint,
                schema=me.schema,
                max_bytes=self.max_bytes,
                auth=self.auth.secret,
                on_header=on_header,
                idle_seconds=self.settings.stream_idle_seconds,
                budget=share,
                pace=PUSH_PACE,
            )
        except asyncio.CancelledError:
            if not self.stopped:  # gRPC's own (the caller went away): not ours to keep
                raise
            task.uncancel()
            return None
        finally:
            self.reading.discard(task)

    def _active(self, peer: Peer, n: int) -> None:
        """`n` bytes of a push from `peer` arrived: they buy it `n / PUSH_PACE` seconds
        of its silence clock (`PeerTable.silent`), never past now. A push at the pace
        this node accepts keeps its sender's slot while it arrives (an honest first
        keyframe may take longer than the silence limit); holding a slot without
        delivering costs an upload at that pace."""
        now = time.monotonic()
        began = self.peers.rounds_began
        since = peer.quiet_since if began is None else max(peer.quiet_since, began)
        peer.quiet_since = min(now, since + n / PUSH_PACE.bytes_per_second)

    async def _accept(self, payload: Payload, copy: int) -> pb.PushAck:
        """Queue `payload`, checked, unless its sender's public copy moved on since its
        header was checked (`copy`: its `Peer.copy` then): a push follows one copy."""
        h = payload.header
        peer = self.peers.get(h.sender_id)
        if peer is None or not peer.live or peer.copy != copy:  # moved on while it arrived
            raise WireError(
                grpc.StatusCode.ABORTED, "state moved on while the payload arrived", "raced"
            )
        if h.kind == pb.PAYLOAD_KIND_DELTA and (
            peer.expected_seq is None or h.seq != peer.expected_seq
        ):
            return pb.PushAck(
                accepted=False, reason="out of step: send a keyframe", need_keyframe=True
            )
        cap = self.settings.max_value
        pid, adapter = peer.node_id, payload.adapter
        entries = None
        try:  # decoding a large payload must not stall the event loop
            if h.kind == pb.PAYLOAD_KIND_KEYFRAME:
                check = self.node.check_keyframe
                vec, entries = await asyncio.to_thread(check, pid, adapter, h.codec, cap)
            else:
                vec = await asyncio.to_thread(self.node.check_payload, pid, adapter, h.codec, cap)
            z = None
            if h.tracker_bytes:
                z = await asyncio.to_thread(self.node.check_tracker, pid, payload.tracker, cap)
                sent = vec if entries is None else np.where(entries, vec, np.float32(np.nan))
                self.node.check_pair(pid, sent, z)
        except GossipError as exc:
            raise WireError(grpc.StatusCode.INVALID_ARGUMENT, str(exc), "bad_values") from exc
        in_step = h.kind != pb.PAYLOAD_KIND_DELTA or peer.expected_seq == h.seq
        moved = peer.copy != copy or self.peers.get(pid) is not peer
        if moved or not peer.live or h.round <= self.progress.round or not in_step:
            raise WireError(
                grpc.StatusCode.ABORTED, "state moved on while the payload was checked", "raced"
            )
        scale = update_scale(h.codec)
        inbound = Inbound(int(h.kind), vec, int(h.sender_degree), int(h.seq), scale, z, entries)
        self.queue(int(h.round), peer, inbound)  # validated: its round is proven
        peer.proven = True
        peer.token_used = bytes(h.session)
        peer.expected_seq = int(h.seq) + 1
        peer.bytes_received += len(payload.data)
        self.peers.heard_from(peer)  # its stay counts from now (a monotonic clock)
        peer.quiet_since = time.monotonic()  # it holds its slot (`PeerTable.silent`)
        self.node.bytes_received += len(payload.data)
        self.metrics.bytes_received.inc(len(payload.data))
        self.progress.wake()
        return pb.PushAck(accepted=True)
