"""Full states: serving this node's adapter (Pull), and catching up to a neighbour.

A node behind its neighbours (before its first round, or later more than
`MAX_ROUNDS_AHEAD` rounds behind, where validated pushes cannot align it) takes an
advanced neighbour's full state instead of trading stale refusals with it. A claimed
round alone moves little (`catch_up_target`): with 3 or more live neighbours the
target is the second-most-advanced claim of a neighbour that delivered a validated
payload before (`proven`; with one proven, the lower of its claim and the
second-highest claim of all; with none, the second-highest claim of all), so one
neighbour alone, or ids that never delivered, cannot move the node; with fewer, the
most advanced proven claim, or among newcomers only the second-highest claim where
there are several. A catch-up never moves the node past `reach`: the planned end of
its rounds, or with `--rounds 0` (no end) `CATCH_UP_WINDOW` rounds past its own (more
where two proven neighbours agree on a higher round), and never past
`MAX_OWN_ROUND`; with `--rounds 0` a claim beyond `reach` moves only the round, to
`reach`, keeping the adapter (a state is taken once the claim is within reach). The
state is accepted only up to the
claim (plus `MAX_ROUNDS_AHEAD` rounds run meanwhile; a proven source that alone
decides may be further on, within `reach`), its values are checked like a
full state's (`DecLoraNode.check_state`), and every neighbour gets a keyframe
afterwards. A failed catch-up (a refused state, a timeout) sets the source's claim
back to the round it has proven, so the same claim is not tried again until its next
handshake; a Pull the source refused as busy (RESOURCE_EXHAUSTED: its Pull pool full,
its callers' network at its share of streamed answers) keeps it, for the next catch-up.

With robust mixing on (`--robust-mixing` other than none) a catch-up takes no state:
it moves only the round (to the same target) and keeps this node's own adapter, so
what enters the model is still decided by the robust rule, one neighbour's payload
at a time; every neighbour gets a keyframe, as after a taken state. With fewer than 3
live neighbours one claim decides that round and nothing checks it, so a member
claiming the plan's end would end the node's training: such a skip moves at most
`LONE_SKIP_PACE` rounds per deadline (`round_seconds`: the exchange's) of the time
since the node's last skip (or its start), counting at most `LONE_SKIP_SPAN` s of it
(`lone_skip_limit`); a catch-up too soon for one round moves nothing. With `--rounds
0` there is no end to claim (a lone claim moves the node at most `CATCH_UP_WINDOW`
rounds a catch-up, `reach`) and no pace applies: a node that joins a swarm running
for days catches up at its first catch-up, not hours later.

A pulled state is held to a pace, as pushes are: its header must announce this
adapter's own state size (`state_bytes`; another size is refused before any data is
buffered, `bad_values`), and the stream must end within `STATE_PACE` of the pull's
start: 5 s, or that size at 32 KiB/s (`PUSH_PACE`'s rate) when longer, never before
`--stream-idle-seconds` (a silence that long is cut anyway, `idle_stream`) and never
after the pull's timeout, max(`--round-deadline`, 30 s). A source that trickles a
valid state (each chunk just inside the idle cut) is cut then (`slow_stream`): a
catch-up holds the round loop for that long at most (`rounds.RoundLoop.catch_up`
then backs off). A pull that ends early for any reason (cut, refused header,
malformed stream) is cancelled at once, so the source's handler stops and neither
side holds the stream until the call's timeout. A catch-up (pull, check and take)
counts as quick when it took at most `CATCH_UP_QUICK` of the state's size (5 s, or
that size at 1 MiB/s when longer), and never more than half the pull's timeout
(`quick_seconds`); a slower one backs off as a failed one does
(`rounds.RoundLoop.catch_up`).

A Pull never waits for local steps: while they run (off the event loop) it serves the
state taken when they began (`stepping`), so no half-updated state is served and slow
steps (an LLM on CPU: seconds each) do not time a puller out. What is taken then is a
copy of the adapter vector only (`Taken`, copied off the event loop); the state is
encoded and signed when a Pull asks for it, off the event loop, once per taking
however many Pulls come: a round without a Pull encodes nothing.

What this trusts: a neighbour that delivered valid payloads (or the only one) can move
this node's round forward within `reach` where it has fewer than 3 live neighbours
(with robust mixing and `--rounds` > 0 only at `LONE_SKIP_PACE` rounds a deadline),
and, without robust mixing, hand it its adapter (bounded like any payload); with 3
or more, only two neighbours agreeing can. Without robust mixing a catch-up is not
covered by any mixing rule; keep strangers out with `--swarm-secret` or mTLS.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import grpc
import numpy as np

from declora.node.daemon.auth import Auth
from declora.node.daemon.inbox import MAX_ROUNDS_AHEAD, PUSH_PACE
from declora.node.daemon.peers import Peer, PeerTable
from declora.node.daemon.sending import push_chunk_bytes
from declora.node.daemon.state import Identity, Progress
from declora.node.dec_lora import DecLoraNode
from declora.node.identity import MAX_OWN_ROUND, MAX_ROUND, shown
from declora.node.settings import NodeSettings
from declora.node.wire import Pace, WireError, chunks, make_header, read_stream
from declora.proto import pb

log = logging.getLogger(__name__)

# A pulled state must end within 5 s of the pull, or this adapter's state size at
# 32 KiB/s when that is longer (a 4 MB fp32 state: 2 minutes, so the pull's timeout
# comes first); `read_stream` never cuts before --stream-idle-seconds. An honest state
# is one message at link speed, as a push is (`PUSH_PACE`), served without waiting for
# local steps (`stepping`).
STATE_PACE = Pace(min_seconds=5.0, bytes_per_second=PUSH_PACE.bytes_per_second)
# With --rounds 0 (no planned end) a catch-up moves this node at most this many rounds
# past its own (a round a second for 12 days), or to the round two proven neighbours
# agree on when that is further. A claim further than that moves only the round, by
# this window, keeping this node's adapter; the state is taken once the claim is
# within the window. So an honest swarm k windows ahead of a node with fewer than two
# proven neighbours (always so after a restart) is reached in k + 1 catch-ups (one
# per `rounds.CATCH_UP_EVERY`, doubling for a repeated source), while one neighbour
# alone needs 2^19 catch-ups (two months at the least) to push it to MAX_OWN_ROUND,
# which still leaves 2^39 rounds below the Hello bound (MAX_ROUND).
CATCH_UP_WINDOW = 2**20
assert MAX_OWN_ROUND + CATCH_UP_WINDOW + MAX_ROUNDS_AHEAD < MAX_ROUND
# A catch-up that took longer than 5 s, or than this adapter's state size at 1 MiB/s
# (8 Mbit/s, a slow uplink) when that is longer, backs off as a failed one does: an
# honest state comes at link speed (100 MB over 100 Mbit/s: 8 s, quick; a 4 MB fp32
# state: 5 s). Within STATE_PACE (the same floor, a faster rate), and capped at
# QUICK_SHARE of the pull's own timeout (`pull_seconds`; uncapped, a state over
# 60 MiB at the default --round-deadline would be allowed longer than the pull may
# take): so a source serving slowly, inside the pace and the timeout, still backs off
# whatever the state's size.
CATCH_UP_QUICK = Pace(min_seconds=STATE_PACE.min_seconds, bytes_per_second=1024 * 1024)
QUICK_SHARE = 0.5
CATCH_UP_MAX_WAIT = 160.0  # seconds: the longest wait between catch-ups (`rounds`)
# Robust mixing with fewer than 3 live neighbours and a planned end (--rounds > 0): one
# unchecked claim decides a skip, which then moves at most this many rounds per
# deadline of the time since the last skip, that time counted up to LONE_SKIP_SPAN
# (none banked for a later claim of the plan's end). The adaptive deadline is
# `exchange.ADAPTIVE_FACTOR` (8) median rounds, so skips alone follow a swarm at the
# pace this node saw in step (its own rounds, which do not wait for neighbours ahead,
# close the gap); a fresh node's deadline is --round-deadline. A member who claims the
# end each time it may (a repeated source waits CATCH_UP_MAX_WAIT) moves the node at
# most 8 rounds a deadline: never at once to the end, though a node whose rounds take
# longer than an eighth of a deadline loses more rounds to it than it trains.
LONE_SKIP_PACE = MAX_ROUNDS_AHEAD
LONE_SKIP_SPAN = CATCH_UP_MAX_WAIT


@dataclass
class Taken:
    """This node's state as of one moment: a copy of its adapter vector, the round and
    seq it belongs to, and (once a Pull asked) its signed encoding, shared by every
    Pull of this taking."""

    vector: np.ndarray
    round: int
    seq: int
    signed: asyncio.Future[tuple[pb.PayloadHeader, bytes]] | None = None


class StateTransfer:
    """This node's full state out (Pull), a neighbour's in (catch-up)."""

    def __init__(
        self,
        settings: NodeSettings,
        identity: Identity,
        node: DecLoraNode[str],
        progress: Progress,
        peers: PeerTable,
        auth: Auth,
        max_bytes: int,
    ) -> None:
        self.settings = settings
        self.me = identity
        self.node = node
        self.progress = progress
        self.peers = peers
        self.auth = auth
        self.max_bytes = max_bytes
        # this node's state as of the last step boundary, kept while local steps run
        # off the event loop (`stepping`): a Pull then serves it instead of waiting
        self.published: Taken | None = None
        self._state_bytes: int | None = None  # `state_bytes`, once known
        # the pace of skips one claim decides (`lone_skip_limit`); `RoundLoop` gives the
        # exchange's deadline as `round_seconds`, tests their own clock
        self.clock: Callable[[], float] = time.monotonic
        self.round_seconds: Callable[[], float] = lambda: settings.round_deadline
        self.skipped_at = self.clock()  # the last skip, or the start

    @asynccontextmanager
    async def stepping(self) -> AsyncIterator[None]:
        """Local steps run (off the event loop) within this block: a Pull meanwhile
        serves the state as it was when the block began, never one mid-step."""
        round_, seq = self.progress.round, self.progress.seq
        # between steps: nothing changes the adapter until they run, so the copy may be
        # taken off the event loop (a Pull meanwhile takes its own, `state_chunks`)
        vector = await asyncio.to_thread(self.node.vector)
        self.published = Taken(vector, round_, seq)
        try:
            yield
        finally:
            self.published = None

    def _snapshot(self) -> Taken:
        """The adapter now (a copy taken on the event loop, not yet encoded), with its
        round and seq."""
        return Taken(self.node.vector(), self.progress.round, self.progress.seq)

    async def state_chunks(self) -> Iterator[pb.Chunk]:
        """This node's full adapter (STATE) as a signed stream: the current one, or
        while local steps run the one before them (`stepping`); a reader checks it
        with `check_state`. Encoded and signed off the event loop, once per taking."""
        state = self.published or self._snapshot()
        if state.signed is None:
            degree = len(self.peers.live)
            state.signed = asyncio.ensure_future(asyncio.to_thread(self._signed, state, degree))
        header, data = await asyncio.shield(state.signed)  # one Pull cut: the rest go on
        return chunks(header, data, push_chunk_bytes(self.settings))  # as a push's

    def _signed(self, state: Taken, degree: int) -> tuple[pb.PayloadHeader, bytes]:
        """The STATE payload of `state` and its signed header (in a worker thread:
        touches nothing the event loop changes)."""
        data = self.node.full_state(state.vector)  # reads only the copy (and the method)
        header = make_header(
            sender_id=self.me.node_id,
            swarm_id=self.me.swarm_id,
            fingerprint=self.me.fingerprint,
            round=state.round,
            sender_degree=degree,
            kind=pb.PAYLOAD_KIND_STATE,
            codec="fp32",
            seq=state.seq,
            data=data,
            schema=self.me.schema,
        )
        return self.auth.sign_payload(header, data), data

    def catch_up_target(self) -> tuple[Peer, int] | None:
        """The neighbour to take a full state from and the round to move to (its claim,
        at most `reach`). With 3 or more live neighbours: the second-most-advanced
        claim among those that delivered a validated payload before (`proven`); with
        one proven, the lower of its claim and the second-highest claim of all (ids
        that never delivered cannot outvote it); with none, the second-highest claim
        of all (one neighbour alone cannot move the node). With fewer: the most
        advanced proven claim, else the claim of the only neighbour, or where there
        are two the lower one. None when no such claim is ahead of this node, or when
        its method cannot take a state (`takes_state`)."""
        if not self.node.takes_state or self.progress.round >= self.planned_end():
            return None
        live = sorted(self.peers.live, key=lambda p: p.claimed_round, reverse=True)
        proven = [p for p in live if p.proven]
        if len(live) >= 3 and len(proven) >= 2:
            source = proven[1]
        elif len(live) >= 3 and proven:  # on a tie the proven one
            source = min(proven[0], live[1], key=lambda p: p.claimed_round)
        elif len(live) >= 3:
            source = live[1]
        elif proven:
            source = proven[0]
        elif live:
            source = live[0] if len(live) == 1 else live[1]
        else:
            return None
        bound = min(source.claimed_round, self.reach())
        if bound <= self.progress.round:
            return None
        return source, bound

    def planned_end(self) -> int:
        """The last round this node can reach: its training exchanges plus the consensus
        finish's (unbounded with `--rounds 0`: MAX_ROUND)."""
        s = self.settings
        if s.rounds == 0:
            return MAX_ROUND
        return s.rounds * s.exchanges_per_round + s.consensus_rounds

    def reach(self) -> int:
        """The furthest round a catch-up may move this node to now: `planned_end`;
        with `--rounds 0`, `CATCH_UP_WINDOW` rounds past its own, or the second-highest
        claim of its proven live neighbours when that is further (two agree); never
        past `MAX_OWN_ROUND`."""
        if self.settings.rounds:
            return min(self.planned_end(), MAX_OWN_ROUND)
        claims = sorted((p.claimed_round for p in self.peers.live if p.proven), reverse=True)
        agreed = claims[1] if len(claims) >= 2 else 0
        return min(max(self.progress.round + CATCH_UP_WINDOW, agreed), MAX_OWN_ROUND)

    @property
    def keeps_adapter(self) -> bool:
        """Whether a catch-up moves only the round, keeping this node's adapter: robust
        mixing is on, so no single neighbour's state may replace the model."""
        return self.settings.robust_mixing != "none"

    def far_behind(self) -> bool:
        """Whether the claims (as `catch_up_target` weighs them) put this node more than
        `MAX_ROUNDS_AHEAD` rounds behind: too far for validated pushes to align it."""
        target = self.catch_up_target()
        return target is not None and target[1] > self.progress.round + MAX_ROUNDS_AHEAD

    def quick_seconds(self) -> float:
        """How long a catch-up may take and still count as quick: `CATCH_UP_QUICK` of
        `state_bytes`, at most QUICK_SHARE of `pull_seconds` (always below the pull's
        timeout, so a catch-up served slowly counts as slow whatever its size)."""
        limit = QUICK_SHARE * self.pull_seconds()
        return min(CATCH_UP_QUICK.seconds(self.state_bytes()), limit)

    def pull_seconds(self) -> float:
        """The timeout of a catch-up's pull: max(--round-deadline, 30 s)."""
        return max(self.settings.round_deadline, 30.0)

    def state_bytes(self) -> int:
        """The size of a full state of this adapter (`full_state`: fp32, every entry),
        the only size a pulled state may have."""
        if self._state_bytes is None:
            self._state_bytes = len(self.node.full_state())
        return self._state_bytes

    async def catch_up(self) -> Peer | None:
        """A node behind its neighbours starts from an advanced one's full state (or
        moves only its round: `_skip_to`); on failure (raised) the source's claim falls
        back to the round it has proven. The neighbour whose state it took or whose
        claim moved the round (None: no neighbour is ahead, nothing tried)."""
        target = self.catch_up_target()
        if target is None:
            return None
        ahead, bound = target
        if self.keeps_adapter:
            why = f"robust mixing ({self.settings.robust_mixing}) is on"
            limit = self.lone_skip_limit()
            if limit is not None and bound > self.progress.round + limit:
                if limit == 0:
                    return None  # too soon for one round: nothing tried
                bound = self.progress.round + limit
                why += f" with fewer than 3 live neighbours ({LONE_SKIP_PACE} rounds a deadline)"
            self._skip_to(ahead, bound, why)
            return ahead
        if not self.settings.rounds and ahead.claimed_round > bound:
            # its state (of its claim) would be refused as beyond reach: the round only
            self._skip_to(ahead, bound, f"round {ahead.claimed_round} is beyond reach")
            return ahead
        try:
            await self._take_state(ahead, bound)
        except Exception as exc:
            if not _busy(exc):  # a source too busy to serve did not lie: its claim stands
                ahead.claimed_round = min(ahead.claimed_round, ahead.round)
            raise
        return ahead

    def lone_skip_limit(self) -> int | None:
        """The most rounds a skip may move this node now where one claim decides it and
        nothing checks it (robust mixing, fewer than 3 live neighbours) and a claim of
        the plan's end would end its training (--rounds > 0): `LONE_SKIP_PACE` per
        deadline (`round_seconds`) of the time since the last skip or the start,
        counted up to `LONE_SKIP_SPAN` s; None where no such limit applies."""
        if not self.keeps_adapter or not self.settings.rounds or len(self.peers.live) >= 3:
            return None
        span = min(max(self.clock() - self.skipped_at, 0.0), LONE_SKIP_SPAN)
        return int(LONE_SKIP_PACE * span / max(self.round_seconds(), 1e-3))

    def _skip_to(self, ahead: Peer, bound: int, why: str) -> None:
        """A catch-up that takes no state (robust mixing; with `--rounds 0` a claim
        beyond `reach`): move the round to `bound` (`catch_up_target`'s), keep the
        adapter; every neighbour gets a keyframe. `why`: the reason, logged."""
        log.warning(
            "%s: skipping ahead from round %d to %d (claimed by %s) "
            "without taking a neighbour's state; this node keeps its own adapter",
            why,
            self.progress.round,
            bound,
            shown(ahead.node_id),
        )
        self.node.end_round()  # the skipped group's z is not sent into later ones
        self.peers.forget_all_copies()
        self.progress.round = bound
        self.progress.seq += 1  # as after a taken state: every neighbour gets a keyframe
        self.skipped_at = self.clock()

    def last_state_round(self, ahead: Peer, bound: int) -> int:
        """The highest round a state pulled from `ahead` for target `bound` may have:
        `bound` plus `MAX_ROUNDS_AHEAD` (rounds it ran since its claim), or, for a
        proven source that alone decides (fewer than 3 live neighbours), `reach` (the
        planned end; with `--rounds 0` the window): its claim can be stale (a Hello
        sent as a partition heals, the source running many short rounds before the
        pull), and it could claim any round within reach anyway. Never past
        `MAX_OWN_ROUND`."""
        if ahead.proven and len(self.peers.live) < 3:
            return self.reach()
        return min(bound + MAX_ROUNDS_AHEAD, self.planned_end(), MAX_OWN_ROUND)

    async def _take_state(self, ahead: Peer, bound: int) -> None:
        me = self.me
        request = pb.PullRequest(
            node_id=me.node_id,
            swarm_id=me.swarm_id,
            kind=pb.PAYLOAD_KIND_STATE,
            session=ahead.token_out,
            receiver_id=ahead.node_id,
        )
        expected = self.state_bytes()

        def sized(h: pb.PayloadHeader) -> None:  # before any data is buffered
            if h.total_bytes != expected:
                raise WireError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"a state of {h.total_bytes} bytes, not this adapter's {expected}",
                    "bad_values",
                )

        stream = self.peers.stub(ahead).Pull(self.auth.sign(request), timeout=self.pull_seconds())
        try:
            payload = await read_stream(
                stream,
                swarm_id=me.swarm_id,
                fingerprint=me.fingerprint,
                schema=me.schema,
                max_bytes=self.max_bytes,
                auth=self.auth.secret,
                on_header=sized,
                idle_seconds=self.settings.stream_idle_seconds,
                pace=STATE_PACE,  # looked up here: tests shorten it
            )
        finally:
            _cancel(stream)  # cut or refused: ended now, not at its timeout
        header = payload.header
        if header.kind != pb.PAYLOAD_KIND_STATE or header.sender_id != ahead.node_id:
            raise WireError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"asked {shown(ahead.node_id)} for its state, got kind {header.kind} from "
                f"{shown(header.sender_id)}",
                "bad_kind",
            )
        state_round = int(header.round)
        last = self.last_state_round(ahead, bound)
        if not self.progress.round < state_round <= last:
            raise WireError(
                grpc.StatusCode.OUT_OF_RANGE,
                f"{shown(ahead.node_id)} sent the state of round {state_round}, outside "
                f"({self.progress.round}, {last}]",
                "future_round",
            )
        vec = self.node.check_state(ahead.node_id, payload.data, cap=self.settings.max_value)
        self.node.take_state(vec)
        self.peers.forget_all_copies()
        self.progress.round = state_round
        self.progress.seq += 1  # our public copy jumped: peers must take a keyframe
        log.info(
            "caught up from %s: starting after its round %d", ahead.node_id, self.progress.round
        )


def _busy(exc: Exception) -> bool:
    """Whether a Pull failed because its source could not serve it now (its Pull pool
    full, its callers' network at its share: RESOURCE_EXHAUSTED), not for its state."""
    return (
        isinstance(exc, grpc.aio.AioRpcError) and exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    )


def _cancel(call: object) -> None:
    """Cancel gRPC `call` (a stub's streaming reply) if it is still running: the
    source's handler stops and the stream's resources are released at once. A no-op
    on a call that has ended, and on a stream that is no gRPC call (an in-memory
    transport's)."""
    cancel = getattr(call, "cancel", None)
    if callable(cancel):
        cancel()
