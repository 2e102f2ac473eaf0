"""Building a node: its workload (data share, model, trainer) and its parts, wired.

`build_parts` is the one place that knows how the parts depend on each other; `Parts`
is what the servicer and the round loop use. Building is blocking (it loads the model)
and touches no network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from declora.node.daemon.admission import recipe_facts
from declora.node.daemon.auth import Auth
from declora.node.daemon.catchup import StateTransfer
from declora.node.daemon.digests import StateDigests
from declora.node.daemon.exchange import Exchange
from declora.node.daemon.handshake import Handshaker
from declora.node.daemon.inbox import MAX_ROUNDS_AHEAD, Inbox
from declora.node.daemon.peer_exchange import PeerExchange
from declora.node.daemon.peers import PeerTable
from declora.node.daemon.startup import finish_rounds, planned_rounds
from declora.node.daemon.state import Identity, Progress
from declora.node.daemon.status import (
    Counters,
    NodeFacts,
    RoundReport,
    pending_peers,
    status_reply,
)
from declora.node.daemon.transport import Transport
from declora.node.dec_lora import DecLoraNode
from declora.node.limits import NodeLimits
from declora.node.metrics import NodeMetrics
from declora.node.security import auth_mode
from declora.node.settings import NodeSettings
from declora.node.trainer import Encoded, LoraModel
from declora.node.workload import load_workload


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


@dataclass
class Parts:
    """A running node's parts, wired together (what the servicer hands RPCs to)."""

    settings: NodeSettings
    lm: LoraModel
    node: DecLoraNode[str]
    test: Encoded | None
    progress: Progress
    report: RoundReport
    counters: Counters
    facts: NodeFacts
    limits: NodeLimits
    auth: Auth
    peers: PeerTable
    handshaker: Handshaker
    inbox: Inbox
    exchange: Exchange
    transfer: StateTransfer
    pex: PeerExchange  # `Daemon` runs it from the start on
    digests: StateDigests = field(default_factory=StateDigests, repr=False)

    async def status(self, include_digest: bool = False) -> Any:
        digest = await self.digests.digest(self) if include_digest else ""
        dial_log = self.handshaker.transport.dial_log  # set by `Daemon`
        outcomes = {} if dial_log is None else dial_log.outcomes
        resolved = self.handshaker.admission.resolved
        pending = pending_peers(self.settings.peers, self.peers, outcomes, resolved)
        return status_reply(
            self.facts,
            self.progress,
            self.report,
            self.counters,
            self.node,
            self.peers,
            digest,
            pending,
        )


def build_parts(
    settings: NodeSettings,
    progress: Progress,
    report: RoundReport,
    counters: Counters,
    metrics: NodeMetrics,
    transport: Transport,
    auth: Auth,
) -> Parts:
    """Load data and model and wire a node's parts (blocking: call it in a thread)."""
    s = settings
    if s.threads:
        torch.set_num_threads(s.threads)
    index, total = s.partition_index or (0, 1)
    work = load_workload(s.recipe(), total, device=resolve_device(s.device))
    node = work.node(index)
    lm = work.lm
    limits = NodeLimits(
        handshakes_per_minute=s.max_handshakes_per_minute,
        pushes_per_round=s.max_pushes_per_round,
        pulls_per_minute=s.max_pulls_per_minute,
        rounds_ahead=MAX_ROUNDS_AHEAD,
    )
    peers = PeerTable(
        node,
        progress,
        transport,
        metrics,
        s.max_neighbors,
        close_grace=s.round_deadline + 1.0,
        max_known=s.max_known_peers,
    )
    recipe = recipe_facts(lm.identity, lm.label_names)
    handshaker = Handshaker(
        s,
        lm.fingerprint,
        recipe,
        progress,
        peers,
        transport,
        auth,
        counters,
    )
    peers.chosen = lambda: {*s.peers, *handshaker.candidates()}  # `PeerTable.displaced`
    identity = Identity(s.node_id, s.swarm_id, lm.fingerprint, lm.schema, node.codec_spec)
    inbox = Inbox(s, identity, node, progress, peers, auth, limits, metrics)
    transport.on_stop(inbox.stop)
    exchange = Exchange(
        s,
        identity,
        node,
        progress,
        peers,
        handshaker,
        inbox,
        auth,
        counters,
        report,
        metrics,
    )
    transfer = StateTransfer(s, identity, node, progress, peers, auth, inbox.max_bytes)
    facts = NodeFacts(
        node_id=s.node_id,
        swarm_id=s.swarm_id,
        fingerprint=lm.fingerprint,
        listen_address=s.advertise,
        codec=s.codec,
        total_rounds=planned_rounds(s),
        consensus_rounds=finish_rounds(s),
        auth=auth_mode(transport.tls is not None, auth.secret is not None),
        gradient_tracking=bool(s.gradient_tracking),  # resolved: never None
        weighting=s.weighting,  # resolved: never "auto"
    )
    return Parts(
        s,
        lm,
        node,
        work.encoded_test(),
        progress,
        report,
        counters,
        facts,
        limits,
        auth,
        peers,
        handshaker,
        inbox,
        exchange,
        transfer,
        PeerExchange(handshaker),
    )
