"""The node daemon: Dec-LoRA rounds with live neighbours over gRPC.

One asyncio event loop serves peers (grpc.aio) while training runs in a worker
thread. A round is the core's sequence (`DecLoraNode`): train K steps, push this
round's compressed payload to every live neighbour, wait for theirs until all have
arrived or `round_deadline` passes, then mix with Metropolis-Hastings weights over
the neighbours that delivered, from the live degrees their messages carry.

Invariants callers may rely on:
- nothing received touches state before it passed every check (`wire.read_stream`,
  sequence checks, `GossipState.decode_checked`); a refused message changes nothing
  and is counted by reason;
- a round never waits longer than `round_deadline` for a neighbour; a neighbour that
  misses it leaves the live set and returns after a successful handshake;
- public copies stay in step: a neighbour that is new, restarted or out of step gets
  a keyframe (the full public copy) instead of a delta;
- checkpoints are written atomically (see `checkpoint`); SIGTERM/SIGINT finish the
  current step, tell neighbours, checkpoint and exit 0;
- with TLS files every connection, both ways, is mutual TLS; with a swarm secret every
  handshake (both Hellos), pull, leave notice and payload must carry a valid mac
  (`security`), and a refusal is counted (`bad_auth`, `replay`, `stale_nonce`);
- no peer gets more than its share: RPCs served at once, pushes per neighbour and
  round, handshakes per host and pulls per node per minute are capped (`limits`);
  the excess is refused RESOURCE_EXHAUSTED and counted `rate_limited`;
- `robust_mixing` picks the mixing step's rule (`robust`); `none` is plain gossip;
- with `gradient_tracking` every payload of a training round also carries the round's
  z message (`tracking`), checked like the adapter message; nodes whose settings differ
  refuse each other's handshakes, and the correction c_i is checkpointed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import signal
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import torch
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from declora.node import PROTOCOL_VERSION, __version__, checkpoint, faults, logs
from declora.node.codecs import make_codec
from declora.node.data import load_dataset
from declora.node.dec_lora import DecLoraNode
from declora.node.discovery import Discovery, MdnsDiscovery, StaticDiscovery, select_neighbors
from declora.node.gossip import GossipError, update_scale
from declora.node.limits import RATE_LIMITED, NodeLimits
from declora.node.metrics import NodeMetrics
from declora.node.mixing import local_mh_weights
from declora.node.partition import partition
from declora.node.security import (
    AuthError,
    Signed,
    SignedT,
    SwarmAuth,
    auth_mode,
    is_loopback,
)
from declora.node.settings import NodeSettings
from declora.node.tracking import TrackingError
from declora.node.trainer import Encoded, LocalTrainer, LoraModel, LoraSpec
from declora.node.wire import WireError, chunks, make_header, read_stream
from declora.proto import pb, pb_grpc

log = logging.getLogger("declora.daemon")

SERVICE_NAME = "declora.v1.Swarm"
MAX_ROUNDS_AHEAD = 8
RECONNECT_SECONDS = 2.0


def grpc_options(settings: NodeSettings) -> list[tuple[str, int]]:
    """Message size limits and keepalive, the same on servers and clients."""
    limit = settings.chunk_kib * 1024 + 64 * 1024
    return [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        ("grpc.keepalive_time_ms", 20_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        # A new channel to a peer that is back connects at once, instead of sharing a
        # process-wide subchannel that still sits in reconnect backoff (up to 120 s).
        ("grpc.use_local_subchannel_pool", 1),
    ]


@dataclass
class Peer:
    """What this node knows of one neighbour."""

    node_id: str
    address: str
    live: bool = False
    degree: int = 0
    round: int = 0
    seq: int = 0
    last_seen: float = 0.0
    missed: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    weight: float = 0.0
    send_keyframe: bool = False
    expected_seq: int | None = None  # None: no copy of its public state yet
    channel: grpc.aio.Channel | None = None
    stub: pb_grpc.SwarmStub | None = None


@dataclass
class Inbound:
    kind: int
    vector: np.ndarray
    degree: int
    seq: int
    scale: float = 1.0  # update_scale of the sender's codec (deltas only)
    tracker: np.ndarray | None = None  # the sender's z (gradient tracking), checked


@dataclass
class Counters:
    rejected: dict[str, int] = field(default_factory=dict)
    keyframes_sent: int = 0

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


class Daemon:
    """One node. `await run()` returns the process exit code."""

    def __init__(self, settings: NodeSettings) -> None:
        self.s = settings
        self.node_id = settings.node_id
        self.metrics = NodeMetrics()
        self.counters = Counters()
        self.peers: dict[str, Peer] = {}
        self.inbox: dict[int, dict[str, Inbound]] = {}
        self.leaving: dict[str, str] = {}  # left after sending this round's payload: why
        self.round = 0  # rounds completed (mixed)
        self.saved_round = -1  # round of the newest checkpoint written or resumed from
        self.seq = 0  # payloads produced
        self.state = "starting"
        self.loss = float("nan")
        self.last_eval: dict[str, float] = {}
        self.self_weight = 1.0
        self.last_round_seconds = 0.0
        self.started = time.time()
        self.stop_requested = False
        self._arrived = asyncio.Event()
        self._stop_event = asyncio.Event()
        self._server: grpc.aio.Server | None = None
        self._health = health.HealthServicer()
        self._discovery: Discovery | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._closing: set[asyncio.Task[None]] = set()
        self.checkpoint_dir = settings.checkpoint_dir or Path("declora-state") / self.node_id
        self.max_bytes = settings.max_message_mib * 1024 * 1024
        self.limits = NodeLimits(
            handshakes_per_minute=settings.max_handshakes_per_minute,
            pushes_per_round=settings.max_pushes_per_round,
            pulls_per_minute=settings.max_pulls_per_minute,
            rounds_ahead=MAX_ROUNDS_AHEAD,
        )
        self.tls = settings.tls()
        secret = settings.swarm_secret
        self.auth = SwarmAuth(secret.get_secret_value().encode()) if secret else None

    # ---------------------------------------------------------------- setup
    def _build(self) -> None:
        s = self.s
        if s.threads:
            torch.set_num_threads(s.threads)
        train, test = load_dataset(s.data, label_column="label" if s.task == "cls" else None)
        index, total = s.partition_index or (0, 1)
        if total > 1:
            labels = train.labels
            if labels is None:  # text only (causal LM): only label-free schemes apply
                if s.partition_scheme != "iid":
                    raise ValueError("unlabelled data can only be partitioned 'iid'")
                labels = np.zeros(len(train), dtype=np.int64)
            parts = partition(s.partition_scheme, labels, total, seed=s.seed)
            train = train.subset(parts[index])
        if s.max_eval and s.max_eval < len(test):
            keep = np.random.default_rng(s.seed).permutation(len(test))[: s.max_eval]
            test = test.subset(np.sort(keep))
        spec = LoraSpec(
            model=s.model,
            task=s.task,
            rank=s.rank,
            alpha=s.alpha,
            targets=tuple(s.targets),
            max_length=s.max_length,
            seed=s.seed,
        )
        self.lm = LoraModel(
            spec, num_labels=max(train.num_labels, 2), device=resolve_device(s.device)
        )
        self.trainer = LocalTrainer(
            self.lm, self.lm.encode(train), s.lr, s.batch_size, seed=s.seed * 1000 + index
        )
        self.node: DecLoraNode[str] = DecLoraNode(
            self.trainer,
            s.codec,
            s.consensus_step,
            s.seed * 1000 + index,
            s.robust_mixing,
            s.gradient_tracking,
        )
        self.test: Encoded | None = self.lm.encode(test) if len(test) else None
        self.codec_spec = make_codec(s.codec).spec

    def _resume(self) -> None:
        state = checkpoint.load(self.checkpoint_dir, self.lm)
        checkpoint.restore_trainer(self.trainer, state.trainer, state.vector)
        self.node.gossip.public = state.public.astype(np.float32)
        if self.node.tracker is not None and state.correction is not None:
            self.node.tracker.set_correction(state.correction)
        self.round, self.seq = state.round, state.seq
        self.saved_round = self.round
        log.info("resumed from %s at round %d", checkpoint.latest(self.checkpoint_dir), self.round)

    # ---------------------------------------------------------------- identity
    @property
    def live_peers(self) -> list[Peer]:
        return sorted((p for p in self.peers.values() if p.live), key=lambda p: p.node_id)

    def hello(self) -> pb.Hello:
        """This node's Hello; signed (with a fresh nonce) when a swarm secret is set."""
        return self.sign(
            pb.Hello(
                protocol_version=PROTOCOL_VERSION,
                package_version=__version__,
                node_id=self.node_id,
                swarm_id=self.s.swarm_id,
                fingerprint=self.lm.fingerprint,
                round=self.round,
                live_degree=len(self.live_peers),
                listen_address=self.s.advertise,
                seq=self.seq,
                gradient_tracking=self.s.gradient_tracking,
            )
        )

    # ---------------------------------------------------------------- authentication
    def sign(self, msg: SignedT) -> SignedT:
        """`msg` with a nonce and mac when a swarm secret is set, else unchanged."""
        return msg if self.auth is None else self.auth.sign(msg)

    def sign_payload(self, header: pb.PayloadHeader, data: bytes) -> pb.PayloadHeader:
        return header if self.auth is None else self.auth.sign_payload(header, data)

    def auth_refusal(self, msg: Signed, what: str) -> str:
        """'' when no secret is set or `msg` is authentic and fresh; else the reason,
        counted (`bad_auth`, `replay`, `stale_nonce`) and logged."""
        if self.auth is None:
            return ""
        try:
            self.auth.verify(msg)
        except AuthError as exc:
            code = grpc.StatusCode.UNAUTHENTICATED
            self.on_reject(WireError(code, f"{what}: {exc.reason}", exc.counter))
            return exc.reason
        return ""

    def check_hello(self, h: pb.Hello) -> str:
        """'' when `h` may join this node's swarm, else the reason it may not."""
        if h.protocol_version != PROTOCOL_VERSION:
            return (
                f"protocol version {h.protocol_version} != {PROTOCOL_VERSION} "
                f"(peer runs declora {h.package_version or '?'}, this node {__version__})"
            )
        if h.swarm_id != self.s.swarm_id:
            return f"swarm {h.swarm_id!r} != {self.s.swarm_id!r}"
        if h.fingerprint != self.lm.fingerprint:
            return (
                f"fingerprint {h.fingerprint} != {self.lm.fingerprint}: base model, LoRA config "
                "or tensor schema differ (same --model, --rank, --alpha, --targets, --seed?)"
            )
        if h.gradient_tracking != self.s.gradient_tracking:
            there, here = ("on", "off") if h.gradient_tracking else ("off", "on")
            return (
                f"gradient tracking is {there} there and {here} here: start every node of "
                "the swarm with the same --gradient-tracking"
            )
        if not h.node_id:
            return "empty node id"
        if h.node_id == self.node_id:
            return f"node id {h.node_id!r} is this node's own id"
        return ""

    def admit(self, h: pb.Hello) -> Peer | None:
        """Add or refresh a neighbour after a good handshake; None when at capacity."""
        peer = self.peers.get(h.node_id)
        if peer is None:
            if len(self.live_peers) >= self.s.max_neighbors:
                return None
            peer = Peer(node_id=h.node_id, address=h.listen_address)
            self.peers[h.node_id] = peer
        if h.listen_address:
            peer.address = h.listen_address
        in_step = peer.live and peer.expected_seq is not None and peer.expected_seq == h.seq + 1
        if not in_step:
            if self.seq == 0 and h.seq == 0:
                self.node.add_peer(peer.node_id)  # both still at the shared seeded init
                peer.expected_seq, peer.send_keyframe = 1, False
            else:
                self.node.gossip.drop_peer(peer.node_id)
                peer.expected_seq, peer.send_keyframe = None, True
            if not peer.live:
                log.info("neighbour %s (%s) joined the live set", peer.node_id, peer.address)
        peer.live = True
        peer.missed = 0
        peer.round, peer.seq, peer.degree = h.round, h.seq, h.live_degree
        peer.last_seen = time.time()
        self.metrics.neighbors.set(len(self.live_peers))
        return peer

    def on_leave(self, peer: Peer, why: str) -> None:
        """A neighbour said goodbye; what it sent for the round in progress still counts."""
        in_round = self.state in ("training", "exchanging")
        if in_round and peer.live and peer.node_id in self.inbox.get(self.round + 1, {}):
            self.leaving[peer.node_id] = why  # dropped right after this round's mix
        else:
            self.drop(peer, why)
        self._arrived.set()

    def drop(self, peer: Peer, why: str) -> None:
        if peer.live:
            log.warning("neighbour %s left the live set: %s", peer.node_id, why)
        peer.live = False
        peer.expected_seq = None
        self.node.gossip.drop_peer(peer.node_id)
        self.metrics.neighbors.set(len(self.live_peers))
        if peer.channel is not None:  # it may sit in reconnect backoff: a new one on return
            # Calls still in flight on it (this round's push) end by their own deadline:
            # closing without grace would cancel them, and a cancelled grpc.aio call
            # raises CancelledError into the round (the node would exit).
            grace = self.s.round_deadline + 1.0
            task = asyncio.get_running_loop().create_task(peer.channel.close(grace=grace))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
            peer.channel, peer.stub = None, None

    # ---------------------------------------------------------------- client side
    def _channel(self, address: str) -> grpc.aio.Channel:
        """A channel to `address`: mTLS when configured, else plaintext."""
        if self.tls is None:
            return grpc.aio.insecure_channel(address, options=grpc_options(self.s))
        credentials = self.tls.channel_credentials()
        return grpc.aio.secure_channel(address, credentials, options=grpc_options(self.s))

    def _stub(self, peer: Peer) -> pb_grpc.SwarmStub:
        if peer.stub is None:
            peer.channel = self._channel(peer.address)
            peer.stub = pb_grpc.SwarmStub(peer.channel)
        return peer.stub

    async def dial(self, address: str) -> Peer | None:
        """Handshake with `address`; admit the peer on success (its Welcome authentic)."""
        channel = self._channel(address)
        try:
            welcome = await pb_grpc.SwarmStub(channel).Handshake(self.hello(), timeout=5)
        except grpc.aio.AioRpcError as exc:
            await channel.close()
            log.debug("handshake with %s failed: %s %s", address, exc.code().name, exc.details())
            return None
        await channel.close()
        if not welcome.accepted:
            log.warning("%s refused the handshake: %s", address, welcome.reason)
            return None
        if self.auth_refusal(welcome.node, f"the welcome of {address}"):
            return None
        reason = self.check_hello(welcome.node)
        if reason:
            log.warning("not joining %s: %s", address, reason)
            return None
        return self.admit(welcome.node)

    def _candidates(self) -> list[str]:
        if self._discovery is None:
            return []
        found = self._discovery.peers()
        named = [p for p in found if p.node_id]
        chosen = select_neighbors(named, self.node_id, self.s.max_neighbors) if named else []
        addresses = [p.address for p in found if not p.node_id] + [p.address for p in chosen]
        return list(dict.fromkeys(addresses))

    async def connect_known(self) -> None:
        """Handshake with every candidate or known peer that is not live."""
        live_addresses = {p.address for p in self.live_peers}
        targets = [a for a in self._candidates() if a not in live_addresses]
        targets += [
            p.address for p in self.peers.values() if not p.live and p.address not in targets
        ]
        if targets:
            await asyncio.gather(*(self.dial(a) for a in targets))

    async def _reconnect_loop(self) -> None:
        while not self.stop_requested:
            with contextlib.suppress(Exception):
                await self.connect_known()
            await asyncio.sleep(RECONNECT_SECONDS)

    async def _push_one(
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
        header = make_header(
            tracker_bytes=tracker_bytes,
            crc32=crc,
            sender_id=self.node_id,
            swarm_id=self.s.swarm_id,
            fingerprint=self.lm.fingerprint,
            round=r,
            sender_degree=degree,
            kind=kind,
            codec=self.codec_spec if kind == pb.PAYLOAD_KIND_DELTA else "fp32",
            seq=self.seq,
            data=data,
            schema=self.lm.schema,
        )
        self.sign_payload(header, data)
        stream: Any = chunks(header, data, self.s.chunk_kib * 1024)
        if faults.armed("mid_stream"):
            stream = _crash_mid_stream(stream)
        ack: pb.PushAck = await self._stub(peer).Push(stream, timeout=self.s.round_deadline)
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
        start (`_align_round`), and an unknown sender (the receiver restarted, or has
        not finished its side of the handshake) retries once.
        """
        try:
            t = tracker_bytes
            if not peer.send_keyframe:
                ack = await self._push_one(peer, r, pb.PAYLOAD_KIND_DELTA, message, degree, crc, t)
                if ack.accepted or not ack.need_keyframe:
                    if not ack.accepted:
                        log.info("%s refused round %d: %s", peer.node_id, r, ack.reason)
                    return
            keyframe = self.node.gossip.keyframe() + message[len(message) - t :]
            ack = await self._push_one(peer, r, pb.PAYLOAD_KIND_KEYFRAME, keyframe, degree, None, t)
            self.counters.keyframes_sent += 1
            peer.send_keyframe = not ack.accepted
            if not ack.accepted:
                log.info("%s refused a keyframe: %s", peer.node_id, ack.reason)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            renew = code in (grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.UNAUTHENTICATED)
            if renew and not self.stop_requested and await self.dial(peer.address) is not None:
                log.info("%s refused round %d (%s): handshake renewed", peer.node_id, r, code.name)
                if code == grpc.StatusCode.UNAUTHENTICATED and retry:
                    await self.push(peer, r, message, degree, crc, tracker_bytes, retry=False)
                return
            self.drop(peer, f"push failed: {code.name} {exc.details() or ''}".strip())
        except Exception:  # one neighbour's failure never takes the node down
            log.exception("push to %s failed unexpectedly", peer.node_id)
            self.drop(peer, "push failed unexpectedly (traceback above)")

    # ---------------------------------------------------------------- server side
    async def on_push(self, stream: AsyncIterator[pb.Chunk]) -> pb.PushAck:
        """Validate, then queue one payload for the mix of its round (raises WireError)."""
        payload = await read_stream(
            stream,
            swarm_id=self.s.swarm_id,
            fingerprint=self.lm.fingerprint,
            schema=self.lm.schema,
            max_bytes=self.max_bytes,
            auth=self.auth,
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
                f"{h.sender_id!r} has not shaken hands with {self.node_id!r}",
                "no_handshake",
            )
        self.limits.check_push(peer.node_id, int(h.round), self.round)
        # Before its first round this node may still catch up (`_bootstrap`) while a
        # neighbour ahead already pushes the rounds after its handshake round.
        starting = self.state in ("loading", "connecting")
        base = max(self.round, peer.round) if starting else self.round
        if h.round <= self.round or h.round > base + MAX_ROUNDS_AHEAD:
            # Refused unchanged: the sender's next delta fails the seq check below, so
            # it resyncs by keyframe; its renewed handshake tells us its round.
            raise WireError(
                grpc.StatusCode.OUT_OF_RANGE,
                f"round {h.round} outside ({self.round}, {base + MAX_ROUNDS_AHEAD}]",
                "stale_round" if h.round <= self.round else "future_round",
            )
        if h.kind == pb.PAYLOAD_KIND_DELTA and (
            peer.expected_seq is None or h.seq != peer.expected_seq
        ):
            return pb.PushAck(
                accepted=False, reason="out of step: send a keyframe", need_keyframe=True
            )
        tracker = self.node.tracker
        if h.tracker_bytes and tracker is None:
            raise WireError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "a gradient-tracking message, but this node does not track",
                "bad_tracking",
            )
        try:  # decoding a large payload must not stall the event loop
            vec = await asyncio.to_thread(
                self.node.gossip.decode_checked, peer.node_id, payload.adapter, h.codec
            )
            z = None
            if h.tracker_bytes and tracker is not None:
                z = await asyncio.to_thread(tracker.decode_checked, peer.node_id, payload.tracker)
        except (GossipError, TrackingError) as exc:
            raise WireError(grpc.StatusCode.INVALID_ARGUMENT, str(exc), "bad_values") from exc
        in_step = h.kind != pb.PAYLOAD_KIND_DELTA or peer.expected_seq == h.seq
        if not peer.live or h.round <= self.round or not in_step:  # changed while decoding
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
        self._arrived.set()
        return pb.PushAck(accepted=True)

    def on_reject(self, exc: WireError) -> None:
        self.count_reject(exc.counter)
        quiet = exc.counter == RATE_LIMITED  # a flood must not flood the log too
        log.log(logging.DEBUG if quiet else logging.WARNING, "refused a message: %s", exc.reason)

    def count_reject(self, counter: str) -> None:
        """Count one refusal by reason: Status `rejected` and `declora_rejected_total`."""
        self.counters.reject(counter)
        self.metrics.rejected.labels(counter).inc()

    def state_digest(self) -> str:
        """SHA-256 over the adapter, every public copy and every queued payload."""
        h = hashlib.sha256()
        h.update(self.node.vector().tobytes())
        h.update(self.node.gossip.public.tobytes())
        for pid in sorted(self.node.gossip.peers):
            h.update(pid.encode() + b"\0" + self.node.gossip.peers[pid].tobytes())
        if self.node.tracker is not None:
            h.update(self.node.tracker.correction().tobytes())
        for r in sorted(self.inbox):
            for pid in sorted(self.inbox[r]):
                msg = self.inbox[r][pid]
                h.update(f"{r}/{pid}/{msg.kind}/{msg.seq}/{msg.degree}\0".encode())
                h.update(msg.vector.tobytes())
                if msg.tracker is not None:
                    h.update(msg.tracker.tobytes())
        return h.hexdigest()

    def status(self, include_digest: bool = False) -> pb.StatusReply:
        reply = pb.StatusReply(
            node_id=self.node_id,
            swarm_id=self.s.swarm_id,
            fingerprint=self.lm.fingerprint if hasattr(self, "lm") else "",
            package_version=__version__,
            state=self.state,
            round=self.round,
            step=self.trainer.step if hasattr(self, "trainer") else 0,
            loss=self.loss,
            self_weight=self.self_weight,
            bytes_sent=self.node.bytes_sent if hasattr(self, "node") else 0,
            bytes_received=self.node.bytes_received if hasattr(self, "node") else 0,
            listen_address=self.s.advertise,
            codec=self.s.codec,
            started_unix=self.started,
            total_rounds=self.s.rounds,
            last_round_seconds=self.last_round_seconds,
            keyframes_sent=self.counters.keyframes_sent,
            auth=auth_mode(self.tls is not None, self.auth is not None),
            gradient_tracking=self.s.gradient_tracking,
        )
        if include_digest and hasattr(self, "node"):
            reply.state_digest = self.state_digest()
        reply.last_eval.update(self.last_eval)
        reply.rejected.update(self.counters.rejected)
        for p in sorted(self.peers.values(), key=lambda p: p.node_id):
            reply.neighbors.append(
                pb.NeighborStatus(
                    node_id=p.node_id,
                    address=p.address,
                    live=p.live,
                    weight=p.weight,
                    degree=p.degree,
                    last_seen_unix=p.last_seen,
                    bytes_sent=p.bytes_sent,
                    bytes_received=p.bytes_received,
                    round=p.round,
                    missed_deadlines=p.missed,
                )
            )
        return reply

    # ---------------------------------------------------------------- rounds
    async def _wait_for(self, r: int, deadline: float) -> None:
        """Until every live neighbour's round-r payload is in, or the deadline."""
        while True:
            got = self.inbox.get(r, {})
            # A neighbour that already completed round r without us sends no round-r
            # payload: it is mixed again once this node has aligned (`_align_round`).
            waiting = [p for p in self.live_peers if p.node_id not in got and p.round < r]
            if not waiting or self.stop_requested:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                for p in waiting:
                    p.missed += 1
                    self.drop(p, f"no payload for round {r} within {self.s.round_deadline:g}s")
                return
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout=min(left, 0.5))

    def _mix(self, r: int, own_degree: int) -> None:
        arrived = self.inbox.pop(r, {})
        degrees: dict[str, int] = {}
        for pid in sorted(arrived):
            msg = arrived[pid]
            peer = self.peers.get(pid)
            if peer is None or not peer.live:
                continue
            try:
                if msg.kind == pb.PAYLOAD_KIND_DELTA:
                    self.node.gossip.add_delta(pid, msg.vector, msg.scale)
                else:
                    self.node.gossip.set_copy(pid, msg.vector)
                if msg.tracker is not None:
                    self.node.receive_tracker(pid, msg.tracker)
            except GossipError as exc:
                self.drop(peer, str(exc))
                continue
            degrees[pid] = max(msg.degree, 1)
            peer.degree = msg.degree
        self_w, weights = local_mh_weights(own_degree, degrees)
        self.node.mix(weights)
        self.self_weight = self_w
        for p in self.peers.values():
            p.weight = weights.get(p.node_id, 0.0)
        for old in [k for k in self.inbox if k <= r]:
            del self.inbox[old]
        for pid, why in self.leaving.items():
            self.drop(self.peers[pid], why)
        self.leaving.clear()

    def _align_round(self) -> None:
        """Skip ahead to the most advanced live neighbour's round (re-join after a fault).

        In step, no live neighbour has completed more rounds than this node at the
        start of a round (each waits for this node's payload); one that has was cut
        off (partition, stall, restart). Skipping ahead keeps this node's own adapter
        and loses only the skipped rounds' local steps.
        """
        ahead = max((p.round for p in self.live_peers), default=0)
        if ahead > self.round:
            log.warning("neighbours are at round %d: skipping ahead from %d", ahead, self.round)
            self.round = ahead

    async def run_round(self, train: bool) -> None:
        self._align_round()
        r = self.round + 1
        logs.set_round(r)
        t0 = time.perf_counter()
        if train:
            self.state = "training"
            self.loss = await asyncio.to_thread(
                self.node.train, self.s.local_steps, lambda: self.stop_requested
            )
            self.metrics.loss.set(self.loss)
        self.state = "exchanging"
        faults.crash_point("before_send")
        delta = self.node.outgoing()
        tracker = self.node.tracker_outgoing() or b""  # after outgoing: the rng's order
        message = delta + tracker if tracker else delta
        self.seq += 1
        degree = len(self.live_peers)
        deadline = time.monotonic() + self.s.round_deadline
        crc = zlib.crc32(message)
        t = len(tracker)
        await asyncio.gather(*(self.push(p, r, message, degree, crc, t) for p in self.live_peers))
        faults.crash_point("after_send")
        await self._wait_for(r, deadline)
        self._mix(r, degree)
        self.round = r
        self.last_round_seconds = time.perf_counter() - t0
        self.metrics.rounds.inc()
        self.metrics.round.set(r)
        self.metrics.round_seconds.observe(self.last_round_seconds)
        log.info(
            "round %d done in %.2fs: loss %.4f, %d live neighbours, self weight %.3f",
            r,
            self.last_round_seconds,
            self.loss,
            len(self.live_peers),
            self.self_weight,
        )

    async def evaluate(self) -> None:
        if self.test is None:
            return
        self.state = "evaluating"
        vec = self.node.vector()
        self.last_eval = await asyncio.to_thread(self.lm.evaluate, vec, self.test)
        if "accuracy" in self.last_eval:
            self.metrics.accuracy.set(self.last_eval["accuracy"])
        log.info("eval %s", {k: round(v, 4) for k, v in self.last_eval.items()})

    def save_checkpoint(self) -> None:
        state = checkpoint.NodeState(
            round=self.round,
            seq=self.seq,
            vector=self.node.vector(),
            public=self.node.gossip.public.copy(),
            trainer=checkpoint.trainer_state(self.trainer),
            fingerprint=self.lm.fingerprint,
            correction=None if self.node.tracker is None else self.node.tracker.correction(),
        )
        path = checkpoint.save(self.checkpoint_dir, self.lm, state, {"node_id": self.node_id})
        self.saved_round = state.round
        log.info("checkpoint written: %s", path)

    def save_final(self) -> Path:
        path = self.checkpoint_dir / "adapter"
        self.lm.save_adapter(
            self.node.vector(),
            path,
            {"node_id": self.node_id, "round": self.round, "eval": self.last_eval},
        )
        log.info("final adapter written: %s", path)
        return path

    def local_disagreement(self) -> float:
        x = self.node.vector()
        scale = max(float(np.linalg.norm(x)), 1e-12)
        dists = [
            float(np.linalg.norm(self.node.gossip.peers[p.node_id] - x)) / scale
            for p in self.live_peers
            if p.node_id in self.node.gossip.peers
        ]
        return max(dists, default=0.0)

    async def catch_up(self) -> None:
        """A node behind its neighbours starts from the most advanced one's full state."""
        ahead = max(self.live_peers, key=lambda p: p.round, default=None)
        if ahead is None or ahead.round <= self.round:
            return
        request = pb.PullRequest(
            node_id=self.node_id, swarm_id=self.s.swarm_id, kind=pb.PAYLOAD_KIND_STATE
        )
        stream = self._stub(ahead).Pull(self.sign(request), timeout=max(self.s.round_deadline, 30))
        payload = await read_stream(
            stream,
            swarm_id=self.s.swarm_id,
            fingerprint=self.lm.fingerprint,
            schema=self.lm.schema,
            max_bytes=self.max_bytes,
            auth=self.auth,
        )
        vec = self.node.gossip.decode_checked(ahead.node_id, payload.data)
        self.trainer.set_vector(vec)
        self.node.gossip.public = vec.copy()
        self.round = int(payload.header.round)
        for p in self.peers.values():
            p.send_keyframe = True
            p.expected_seq = None
            self.node.gossip.drop_peer(p.node_id)
        self.seq += 1  # our public copy jumped: peers must take a keyframe
        log.info("caught up from %s: starting after its round %d", ahead.node_id, self.round)

    # ---------------------------------------------------------------- lifecycle
    async def _start_server(self) -> None:
        server = grpc.aio.server(
            options=grpc_options(self.s), maximum_concurrent_rpcs=self.s.max_concurrent_streams
        )
        pb_grpc.add_SwarmServicer_to_server(SwarmService(self), server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        if self.tls is None:
            server.add_insecure_port(self.s.listen)
        else:
            server.add_secure_port(self.s.listen, self.tls.server_credentials())
        await server.start()
        self._server = server
        self._health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        self._health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING)

    def _set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        self._health.set("", status)
        self._health.set(SERVICE_NAME, status)

    async def _bootstrap(self) -> None:
        s = self.s
        want = s.min_peers if s.min_peers >= 0 else (len(s.peers) if not s.mdns else 1)
        want = min(want, s.max_neighbors)
        deadline = time.monotonic() + s.startup_timeout
        self.state = "connecting"
        while (
            len(self.live_peers) < want and time.monotonic() < deadline and not self.stop_requested
        ):
            await self.connect_known()
            if len(self.live_peers) < want:
                await asyncio.sleep(0.2)
        if len(self.live_peers) < want:
            log.warning("starting with %d of %d wanted neighbours", len(self.live_peers), want)
        try:
            await self.catch_up()
        except (WireError, GossipError, grpc.aio.AioRpcError) as exc:  # keep our own state
            why = exc.reason if isinstance(exc, WireError) else str(exc)
            log.warning("could not take a neighbour's state (%s): going on from our own", why)

    def request_stop(self) -> None:
        if self.stop_requested:
            log.warning("second interrupt: exiting now")
            os._exit(130)
        log.info("stop requested: finishing the current step")
        self.stop_requested = True
        self._stop_event.set()
        self._arrived.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
        if self.tls is None and self.auth is None and not is_loopback(self.s.listen):
            log.warning(
                "serving %s with neither mTLS nor a swarm secret: anyone who reaches this "
                "port can join the swarm and read the adapter; set DECLORA_SWARM_SECRET or "
                "--tls-cert/--tls-key/--tls-ca (`declora-node certs` mints them)",
                self.s.listen,
            )
        self.state = "loading"
        await asyncio.to_thread(self._build)
        if self.s.resume:
            self._resume()
        logs.set_round(self.round)
        await self._start_server()
        if self.s.metrics_port:
            self.metrics.serve(self.s.metrics_port)
        if self.s.mdns:
            self._discovery = MdnsDiscovery(
                node_id=self.node_id,
                swarm_id=self.s.swarm_id,
                fingerprint=self.lm.fingerprint,
                protocol_version=PROTOCOL_VERSION,
                advertise=self.s.advertise,
                interface=self.s.mdns_interface,
                logger=logging.getLogger("declora.discovery"),
            )
        else:
            self._discovery = StaticDiscovery(self.s.peers, self.s.advertise)
        await self._discovery.start()
        self._set_serving(True)
        log.info(
            "serving on %s (swarm %s, fingerprint %s, %d adapter values, codec %s, "
            "robust mixing %s)",
            self.s.listen,
            self.s.swarm_id,
            self.lm.fingerprint,
            self.lm.schema.numel,
            self.codec_spec,
            self.node.gossip.robust.spec,
        )
        try:
            await self._bootstrap()
            self._tasks.append(asyncio.create_task(self._reconnect_loop()))
            await self._train_loop()
        finally:
            await self._shutdown()
        return 0

    async def _train_loop(self) -> None:
        s = self.s
        while not self.stop_requested and (s.rounds == 0 or self.round < s.rounds):
            await self.run_round(train=True)
            evaluated = bool(s.eval_every and self.round % s.eval_every == 0)
            if evaluated:
                await self.evaluate()
            self.record_round("train", evaluated)
            if self.round % s.checkpoint_every == 0:
                await asyncio.to_thread(self.save_checkpoint)
        if self.stop_requested:
            return
        self.state = "consensus"
        for _ in range(s.consensus_rounds):
            if (
                self.stop_requested
                or not self.live_peers
                or self.local_disagreement() <= s.consensus_tol
            ):
                break
            await self.run_round(train=False)
            self.record_round("consensus", False)
        await self.evaluate()
        self.record_round("final", True)
        self.state = "done"

    def record_round(self, phase: str, evaluated: bool) -> None:
        """Append one JSON line to `<checkpoint_dir>/rounds.jsonl` (the node's history)."""
        entry = {
            "time": time.time(),
            "round": self.round,
            "phase": phase,
            "step": self.trainer.step,
            "loss": None if np.isnan(self.loss) else self.loss,
            "eval": self.last_eval if evaluated else None,
            "live_neighbors": [p.node_id for p in self.live_peers],
            "self_weight": self.self_weight,
            "bytes_sent": self.node.bytes_sent,
            "bytes_received": self.node.bytes_received,
            "seconds": self.last_round_seconds,
            "disagreement": self.local_disagreement(),
        }
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        with (self.checkpoint_dir / "rounds.jsonl").open("a") as fh:
            fh.write(json.dumps(entry) + "\n")

    async def _shutdown(self) -> None:
        self.state = "stopping"
        self._set_serving(False)
        for task in self._tasks:
            task.cancel()
        notice = self.sign(
            pb.LeaveNotice(node_id=self.node_id, swarm_id=self.s.swarm_id, round=self.round)
        )
        live = self.live_peers
        if live:
            await asyncio.gather(
                *(self._stub(p).Leave(notice, timeout=2) for p in live), return_exceptions=True
            )
        if self._discovery is not None:
            with contextlib.suppress(Exception):
                await self._discovery.stop()
        if hasattr(self, "lm"):
            if self.saved_round != self.round:  # never rewrite the checkpoint LATEST names
                await asyncio.to_thread(self.save_checkpoint)
            await asyncio.to_thread(self.save_final)
        for p in self.peers.values():
            if p.channel is not None:
                await p.channel.close()
        if self._server is not None:
            await self._server.stop(grace=1.0)
        self.state = "stopped"
        log.info("stopped after round %d", self.round)


async def _crash_mid_stream(stream: Iterator[pb.Chunk]) -> AsyncIterator[pb.Chunk]:
    """Pass the header and first data chunk, give them time to leave, then crash."""
    for i, chunk in enumerate(stream):
        if i == 2:
            await asyncio.sleep(0.3)
            faults.crash_point("mid_stream")
        yield chunk


class SwarmService(pb_grpc.SwarmServicer):
    """The gRPC face of a `Daemon`; every refusal carries a status code and a reason."""

    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon

    async def Handshake(self, request: pb.Hello, context: grpc.aio.ServicerContext) -> pb.Welcome:
        d = self.d
        await self._limit(context, d.limits.check_handshake, context.peer())
        if not hasattr(d, "lm"):
            await context.abort(grpc.StatusCode.UNAVAILABLE, "node is still loading its model")
        refusal = d.auth_refusal(request, f"handshake from {request.node_id or '?'}")
        if refusal:  # nothing about this node for a stranger
            return pb.Welcome(accepted=False, reason=f"not authenticated: {refusal}")
        reason = d.check_hello(request)
        if reason:
            d.count_reject("handshake")
            log.warning("refused handshake from %s: %s", request.node_id or "?", reason)
            return pb.Welcome(accepted=False, reason=reason, node=d.hello())
        if d.admit(request) is None:
            return pb.Welcome(
                accepted=False, reason="node has its maximum of neighbours", node=d.hello()
            )
        return pb.Welcome(accepted=True, node=d.hello())

    async def Push(
        self, request_iterator: AsyncIterator[pb.Chunk], context: grpc.aio.ServicerContext
    ) -> pb.PushAck:
        if not hasattr(self.d, "lm"):
            await context.abort(grpc.StatusCode.UNAVAILABLE, "node is still loading its model")
        try:
            return await self.d.on_push(request_iterator)
        except WireError as exc:
            self.d.on_reject(exc)
            await context.abort(exc.code, exc.reason)
            raise  # unreachable: abort raises

    async def Pull(
        self, request: pb.PullRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.Chunk]:
        d = self.d
        refusal = d.auth_refusal(request, f"pull from {request.node_id or '?'}")
        if refusal:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, refusal)
        if request.swarm_id != d.s.swarm_id or request.node_id not in d.peers:
            d.count_reject("no_handshake")
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "pull needs a handshake first")
        await self._limit(context, d.limits.check_pull, request.node_id)
        if request.kind not in (
            pb.PAYLOAD_KIND_UNSPECIFIED,
            pb.PAYLOAD_KIND_STATE,
            pb.PAYLOAD_KIND_KEYFRAME,
        ):
            d.count_reject("bad_kind")
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"pull serves STATE or KEYFRAME, not kind {request.kind}",
            )
        if request.kind == pb.PAYLOAD_KIND_STATE:
            data = make_codec("fp32").encode(d.node.vector(), np.random.default_rng(0))
        else:
            data = d.node.gossip.keyframe()
        header = make_header(
            sender_id=d.node_id,
            swarm_id=d.s.swarm_id,
            fingerprint=d.lm.fingerprint,
            round=d.round,
            sender_degree=len(d.live_peers),
            kind=request.kind or pb.PAYLOAD_KIND_STATE,
            codec="fp32",
            seq=d.seq,
            data=data,
            schema=d.lm.schema,
        )
        d.sign_payload(header, data)
        for chunk in chunks(header, data, d.s.chunk_kib * 1024):
            yield chunk

    async def _limit(
        self, context: grpc.aio.ServicerContext, check: Callable[[str], None], key: str
    ) -> None:
        """Abort with RESOURCE_EXHAUSTED (counted `rate_limited`) when `check(key)` refuses."""
        try:
            check(key)
        except WireError as exc:
            self.d.on_reject(exc)
            await context.abort(exc.code, exc.reason)

    async def Leave(
        self, request: pb.LeaveNotice, context: grpc.aio.ServicerContext
    ) -> pb.LeaveAck:
        refusal = self.d.auth_refusal(request, f"leave notice from {request.node_id or '?'}")
        if refusal:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, refusal)
        peer = self.d.peers.get(request.node_id)
        if peer is not None and request.swarm_id == self.d.s.swarm_id:
            self.d.on_leave(peer, f"it left after round {request.round}")
        return pb.LeaveAck()

    async def Status(
        self, request: pb.StatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.StatusReply:
        return self.d.status(request.include_digest)


def serve(settings: NodeSettings) -> int:
    """Run a daemon until it finishes or is stopped; the process exit code."""
    logs.configure(settings.node_id, settings.log_format, settings.log_level)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional off Linux/macOS
        return asyncio.run(Daemon(settings).run())
    return uvloop.run(Daemon(settings).run())
