"""One round's exchange: push this round's payload, wait for the neighbours', mix.

Invariants callers may rely on:
- a round never waits longer than its deadline for a neighbour, its pushes included
  (`sending`: an ack that has not come by then is not waited for): `round_deadline`
  until 3 rounds were seen, then `ADAPTIVE_FACTOR` x the recent median round (rounds
  that mixed with someone: `RoundLoop.run_round`; at least `ADAPTIVE_FLOOR`, at most
  `round_deadline`); a neighbour that misses it leaves
  the live set and returns after a successful handshake; one whose payload was still
  arriving then (a link slower than the recent rounds: it degraded, or the payload
  grew) makes the rounds wait up to `round_deadline` again, as at the start, until 3
  rounds were seen (`relearn`);
- a neighbour whose port refuses connections while this node waits for it (a health
  probe every `PROBE_EVERY` s after `PROBE_AFTER` s) is dropped at once;
- public copies stay in step: a neighbour that is new, restarted or out of step gets
  a keyframe (the full public copy) instead of a delta;
- mixing uses Metropolis-Hastings weights over the neighbours that delivered, from
  the live degrees their messages carry; a mix that gives non-finite values is undone
  and its contributors dropped;
- a neighbour that joins the live set while the round waits gets the round's payload
  too (keyframe fallback, by the same deadline; one on probation, `sending`, only
  `PROBATION_GRACE` s beyond the round's other work, as at the round's start): both
  sides of a handshake made mid-round wait for each other, so neither may leave the
  other without one;
- a neighbour is not waited for in a round it has already completed, by its verified
  round or its handshake's claim (`due`): it sends no payload for it;
- a round number moves this node only when a validated payload backs it, by at most
  `MAX_ROUNDS_AHEAD` per `MAX_ROUNDS_AHEAD` rounds, and with 3 or more neighbours only
  when two of them are ahead (`align_round`).
Pushing is `sending`'s, receiving and checking payloads `inbox`'s, full states `catchup`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections.abc import Callable

import grpc
import numpy as np

from declora.node import faults
from declora.node.daemon.auth import Auth
from declora.node.daemon.handshake import Handshaker
from declora.node.daemon.inbox import MAX_ROUNDS_AHEAD, Inbox
from declora.node.daemon.peers import SILENT_GRACE, SILENT_ROUNDS, Peer, PeerTable
from declora.node.daemon.sending import PROBATION_GRACE, RoundPayload, Sender
from declora.node.daemon.state import Identity, Progress
from declora.node.daemon.status import Counters, RoundReport
from declora.node.dec_lora import DecLoraNode, TrainerSnapshot
from declora.node.gossip import GossipError
from declora.node.logs import safe_text
from declora.node.metrics import NodeMetrics
from declora.node.mixing import local_mh_weights
from declora.node.settings import NodeSettings
from declora.proto import pb

try:  # grpc's health service: the liveness probe of a neighbour a round waits for
    from grpc_health.v1 import health_pb2, health_pb2_grpc
except ImportError:  # pragma: no cover - a dependency of the package
    health_pb2 = health_pb2_grpc = None

log = logging.getLogger(__name__)

PROBE_AFTER, PROBE_EVERY, PROBE_TIMEOUT = 1.0, 1.0, 2.0  # seconds (liveness probes)
ADAPTIVE_FACTOR, ADAPTIVE_FLOOR = 8.0, 10.0  # deadline: factor x median round, >= floor
RECENT_ROUNDS = 16


class Exchange:
    """The round protocol of one node over its peer table and inbox."""

    def __init__(
        self,
        settings: NodeSettings,
        identity: Identity,
        node: DecLoraNode[str],
        progress: Progress,
        peers: PeerTable,
        handshaker: Handshaker,
        inbox: Inbox,
        auth: Auth,
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
        self.inbox = inbox
        self.auth = auth
        self.counters = counters
        self.report = report
        self.metrics = metrics
        self.recent: list[float] = []  # seconds of the last rounds (adaptive deadline)
        self.last_contributors: list[str] = []  # whose payloads the last mix used
        self.next_skip = 0  # the round from which `align_round` may skip ahead again
        # the most rounds `align_round` may move now (None: no pace); `RoundLoop` gives
        # the catch-ups' lone-skip pace, so one member cannot add the two
        self.skip_limit: Callable[[], int | None] = lambda: None
        shared = (settings, identity, node, progress, peers, handshaker, auth, counters, metrics)
        self.sender = Sender(*shared, inbox.verified_round)
        peers.finish_round = settings.rounds * settings.exchanges_per_round  # `finished`

    # ------------------------------------------------------------ one round
    async def exchange(self, r: int) -> None:
        """Push round `r`'s payload to every live neighbour, wait for theirs, mix."""
        faults.crash_point("before_send")
        if self.peers.rounds_began is None:  # neighbours' silence counts from now
            self.peers.rounds_began = time.monotonic()
        delta = self.node.outgoing()
        tracker = self.node.tracker_outgoing() or b""  # after outgoing: the rng's order
        message = delta + tracker if tracker else delta
        self.progress.seq += 1
        live = self.peers.live
        degree = len(live)
        t0 = time.monotonic()
        deadline = t0 + self.deadline_seconds()
        crc = zlib.crc32(message)
        out = RoundPayload(r, message, degree, crc, len(tracker), deadline)
        late = await self.sender.send_round(live, out)
        joined: dict[asyncio.Task[None], Peer] = {}  # pushes to those who joined meanwhile
        try:
            faults.crash_point("after_send")
            await self.wait_for(r, deadline, out, {p.node_id for p in live}, joined)
            for task, p in list(joined.items()):  # on probation: no new full deadline
                if self.sender.on_probation(p):
                    late[task] = joined.pop(task)
            await self.sender.settle(joined, r, deadline)
        except BaseException:  # the round ends here (the node stops): no push outlives it
            for task in [*late, *joined]:
                task.cancel()
            raise
        if late:  # acks of neighbours on probation: a little beyond the round's work
            grace = max(PROBATION_GRACE, float(np.median(self.recent)) if self.recent else 0)
            await self.sender.settle(late, r, min(deadline, time.monotonic() + grace))
        self.mix(r, degree)

    def observe_round(self, seconds: float) -> None:
        """Record a completed round's wall time (train + exchange) for the deadline."""
        self.recent = [*self.recent[-(RECENT_ROUNDS - 1) :], seconds]
        self.peers.silence_limit = max(SILENT_GRACE, SILENT_ROUNDS * max(self.recent))

    def deadline_seconds(self) -> float:
        """How long this round waits for neighbours: `ADAPTIVE_FACTOR` x the median
        of the recent rounds, at least `ADAPTIVE_FLOOR`, at most `round_deadline`
        (which alone applies until 3 rounds were seen)."""
        cap = self.settings.round_deadline
        if len(self.recent) < 3:
            return cap
        median = float(np.median(self.recent))
        return min(cap, max(ADAPTIVE_FLOOR, ADAPTIVE_FACTOR * median))

    def relearn(self, r: int, arriving: list[str]) -> None:
        """Round `r` ended at its deadline while the payloads of `arriving` (node ids)
        were still coming in: the links are slower than the deadline. An adaptive
        deadline forgets the recent rounds (the next ones wait up to `round_deadline`
        and learn the links' pace again); one that is `round_deadline` already cannot
        grow, and the warning says what can help."""
        if not arriving:
            return
        seconds, cap = self.deadline_seconds(), self.settings.round_deadline
        who = ", ".join(arriving)
        if seconds < cap:
            self.recent = []
            log.warning(
                "round %d: %s's payload was still arriving at the %.0fs deadline learnt "
                "from recent rounds: the link is slower now; the next rounds wait up to "
                "--round-deadline %.0fs again",
                r, who, seconds, cap,
            )  # fmt: skip
        else:
            log.warning(
                "round %d: %s's payload was still arriving at --round-deadline %.0fs: the "
                "link is too slow for it; give a longer --round-deadline, or a smaller "
                "payload (--codec q4 sends about 8x fewer bytes than fp32)",
                r, who, cap,
            )  # fmt: skip

    def align_round(self) -> bool:
        """Skip ahead to an advanced live neighbour's round (re-join after a fault);
        whether it skipped.

        In step, no live neighbour has completed more rounds than this node at the
        start of a round (each waits for this node's payload); one that has was cut
        off (partition, stall, restart). Skipping ahead keeps this node's own adapter
        and loses only the skipped rounds' local steps. Only validated payloads set a
        neighbour's round; one skip moves at most `MAX_ROUNDS_AHEAD` rounds, and at
        most `skip_limit()` (the lone-skip pace, `StateTransfer.lone_skip_limit`, where
        one claim decides; 0: none now), the next skip waits that many rounds, and with 3
        or more live neighbours the target is the second-most-advanced round (one
        neighbour alone cannot move the node).
        """
        rounds = sorted((self.inbox.verified_round(p) for p in self.peers.live), reverse=True)
        if not rounds:
            return False
        ahead = rounds[1] if len(rounds) >= 3 else rounds[0]
        current = self.progress.round
        limit = self.skip_limit()
        most = MAX_ROUNDS_AHEAD if limit is None else min(limit, MAX_ROUNDS_AHEAD)
        if ahead > current and current >= self.next_skip and most > 0:
            target = min(ahead, current + most)
            log.warning(
                "neighbours are at round %d: skipping ahead from %d to %d", ahead, current, target
            )
            self.progress.round = target
            self.next_skip = target + MAX_ROUNDS_AHEAD
            self.node.end_round()  # the skipped group's z is not sent into later ones
            return True
        return False

    async def wait_for(
        self,
        r: int,
        deadline: float,
        out: RoundPayload,
        sent: set[str],
        joined: dict[asyncio.Task[None], Peer],
    ) -> None:
        """Until every live neighbour's round-r payload is in, or the deadline; a
        neighbour whose connection is refused meanwhile is dropped at once. A live
        neighbour not in `sent` (node ids) joined (or came back) meanwhile and gets
        `out` too, its push task put in `joined` (the caller settles or cancels it)."""
        probes: dict[str, asyncio.Task[None]] = {}
        next_probe = time.monotonic() + PROBE_AFTER
        try:
            while True:
                live = self.peers.live
                sent &= {p.node_id for p in live}  # one that left and came back: again
                for p in live:
                    if p.node_id not in sent:
                        sent.add(p.node_id)
                        joined[asyncio.create_task(self.sender.push(p, out))] = p
                got = self.inbox.arrived(r)
                waiting = [p for p in self.peers.live if p.node_id not in got and self.due(p, r)]
                if not waiting or self.progress.stop_requested:
                    return
                now = time.monotonic()
                left = deadline - now
                if left <= 0:
                    self.relearn(
                        r, [p.node_id for p in waiting if self.inbox.open_streams.get(p.node_id)]
                    )
                    for p in waiting:
                        p.missed += 1
                        self.peers.drop(p, f"no payload for round {r} within the deadline")
                    return
                if now >= next_probe:
                    next_probe = now + PROBE_EVERY
                    for p in waiting:
                        task = probes.get(p.node_id)
                        if task is None or task.done():
                            probes[p.node_id] = asyncio.create_task(self._probe(p))
                self.progress.arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self.progress.arrived.wait(), timeout=min(left, PROBE_EVERY / 2)
                    )
        finally:
            for task in probes.values():
                task.cancel()

    def due(self, peer: Peer, r: int) -> bool:
        """Whether `peer` can still deliver a round-r payload this node accepts.

        One that has completed round r, by its verified round or its handshake's claim,
        sends none: waiting for it would hold the round to the deadline and drop it,
        again after every re-join (one round apart), or, one beyond `MAX_ROUNDS_AHEAD`
        (a healed partition), just as its renewed handshake re-admits it. It is mixed
        again once this node has aligned (`align_round`) or taken its state
        (`catchup`). A claim only spares it the wait: it moves nothing."""
        return max(self.inbox.verified_round(peer), peer.claimed_round) < r

    async def _probe(self, peer: Peer) -> None:
        """Drop `peer` when its port refuses a health check (it crashed or left)."""
        if health_pb2_grpc is None or not peer.live:
            return
        stub = health_pb2_grpc.HealthStub(self.peers.channel(peer))
        try:
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=PROBE_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE and peer.live:
                why = safe_text(exc.details() or "", 200)
                self.peers.drop(peer, f"its port refuses connections ({why})")
                self.progress.wake()

    def mix(self, r: int, own_degree: int) -> None:
        """Apply round r's payloads and mix with MH weights over those who delivered
        (a delta whose sender's copy was forgotten since it was queued is no longer
        there: `PeerTable.copy_forgotten`)."""
        arrived = self.inbox.take(r)
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
                    self.node.accept_keyframe(pid, msg.vector, msg.entries)
                if msg.tracker is not None:
                    self.node.receive_tracker(pid, msg.tracker)
            except GossipError as exc:
                self.peers.drop(peer, str(exc))
                continue
            degrees[pid] = max(msg.degree, 1)
            peer.degree = msg.degree
        self_w, weights = local_mh_weights(own_degree, degrees)
        # a mix that may take a held-back step moves the optimizer too: keep its state
        if self.node.trainer.deferred is not None:
            before = TrainerSnapshot.of(self.node)
        else:
            before = TrainerSnapshot(self.node.snapshot())
        self.node.mix(weights)
        if not self.node.is_finite():  # what they sent passed every check, yet...
            before.restore(self.node)  # ...and the step held back is dropped with it
            for pid in degrees:
                self.peers.drop(self.peers.peers[pid], "mixing its payload gave non-finite values")
            self_w, weights, degrees = 1.0, {}, {}  # nothing was mixed
        self.last_contributors = sorted(degrees)
        self.report.self_weight = self_w
        for p in self.peers.all():
            p.weight = weights.get(p.node_id, 0.0)
        self.peers.drop_leaving()

    def on_leave(self, peer: Peer, why: str, left_after: int | None = None) -> None:
        """A neighbour said goodbye (after its round `left_after`, when given: the
        caller bounds it); what it sent for the round in progress still counts."""
        has_payload = peer.node_id in self.inbox.arrived(self.progress.round + 1)
        in_round = self.progress.in_round and peer.live and has_payload
        self.peers.leave(peer, why, after_mix=in_round, left_after=left_after)
        self.progress.wake()
