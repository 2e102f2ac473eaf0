"""The peer table: what this node knows of each neighbour, and the live set.

Invariants callers may rely on:
- a peer is live only after a good handshake (`admit`); it leaves the live set by
  `drop` (missed deadline, failed push, bad message) or a leave notice, and returns
  only through another handshake;
- `admit` decides how the two public copies get in step: both at the shared seeded
  init (seq 0) means no keyframe; a peer that is new, restarted or out of step is
  forgotten by the core and gets a keyframe next;
- at most `max_neighbors` peers are live at once;
- a dropped peer's channel closes with a grace longer than a push's deadline, so a
  push in flight ends by its own deadline instead of being cancelled.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import grpc

from declora.node.daemon.state import Progress
from declora.node.daemon.transport import Transport
from declora.node.dec_lora import DecLoraNode
from declora.node.metrics import NodeMetrics
from declora.proto import pb, pb_grpc

log = logging.getLogger(__name__)


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


class PeerTable:
    """Neighbours by node id, the live set, and each one's channel."""

    def __init__(
        self,
        node: DecLoraNode[str],
        progress: Progress,
        transport: Transport,
        metrics: NodeMetrics,
        max_neighbors: int,
        close_grace: float,
    ) -> None:
        self.node = node
        self.progress = progress
        self.transport = transport
        self.metrics = metrics
        self.max_neighbors = max_neighbors
        self.close_grace = close_grace
        self.peers: dict[str, Peer] = {}
        self.leaving: dict[str, str] = {}  # left after sending this round's payload: why

    def get(self, node_id: str) -> Peer | None:
        return self.peers.get(node_id)

    def all(self) -> list[Peer]:
        """Every known peer, by node id."""
        return sorted(self.peers.values(), key=lambda p: p.node_id)

    @property
    def live(self) -> list[Peer]:
        """The live set, by node id."""
        return [p for p in self.all() if p.live]

    def stub(self, peer: Peer) -> pb_grpc.SwarmStub:
        """The peer's stub, on a channel opened on first use."""
        if peer.stub is None:
            peer.channel = self.transport.channel(peer.address)
            peer.stub = pb_grpc.SwarmStub(peer.channel)
        return peer.stub

    def admit(self, hello: pb.Hello) -> Peer | None:
        """Add or refresh a neighbour after a good handshake; None when at capacity."""
        peer = self.peers.get(hello.node_id)
        if peer is None:
            if len(self.live) >= self.max_neighbors:
                return None
            peer = Peer(node_id=hello.node_id, address=hello.listen_address)
            self.peers[hello.node_id] = peer
        if hello.listen_address:
            peer.address = hello.listen_address
        in_step = peer.live and peer.expected_seq is not None and peer.expected_seq == hello.seq + 1
        if not in_step:
            if self.progress.seq == 0 and hello.seq == 0:
                self.node.add_peer(peer.node_id)  # both still at the shared seeded init
                peer.expected_seq, peer.send_keyframe = 1, False
            else:
                self.node.forget_peer(peer.node_id)
                peer.expected_seq, peer.send_keyframe = None, True
            if not peer.live:
                log.info("neighbour %s (%s) joined the live set", peer.node_id, peer.address)
        peer.live = True
        peer.missed = 0
        peer.round, peer.seq, peer.degree = hello.round, hello.seq, hello.live_degree
        peer.last_seen = time.time()
        self.metrics.neighbors.set(len(self.live))
        return peer

    def drop(self, peer: Peer, why: str) -> None:
        """Take `peer` out of the live set; its public copy is forgotten."""
        if peer.live:
            log.warning("neighbour %s left the live set: %s", peer.node_id, why)
        peer.live = False
        peer.expected_seq = None
        self.node.forget_peer(peer.node_id)
        self.metrics.neighbors.set(len(self.live))
        if peer.channel is not None:  # it may sit in reconnect backoff: a new one on return
            self.transport.close_later(peer.channel, self.close_grace)
            peer.channel, peer.stub = None, None

    def leave(self, peer: Peer, why: str, after_mix: bool) -> None:
        """A neighbour said goodbye; with `after_mix` its payload of the round in
        progress still counts and it is dropped by `drop_leaving` after the mix."""
        if after_mix:
            self.leaving[peer.node_id] = why
        else:
            self.drop(peer, why)

    def drop_leaving(self) -> None:
        for pid, why in self.leaving.items():
            self.drop(self.peers[pid], why)
        self.leaving.clear()

    def forget_all_copies(self) -> None:
        """After this node's public copy jumped (catch-up): every peer needs a keyframe."""
        for p in self.peers.values():
            p.send_keyframe = True
            p.expected_seq = None

    async def close(self) -> None:
        for p in self.peers.values():
            if p.channel is not None:
                await p.channel.close()
