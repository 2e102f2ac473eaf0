"""Sending one round's payload to the live neighbours, within the round's deadline.

Invariants callers may rely on:
- every push of a round (the delta, a keyframe, retries, the retry after a renewed
  handshake) ends by the round's deadline, the one the wait for the neighbours'
  payloads uses: a push whose ack has not come by then is cancelled and counted
  (`push_timeout`); the round goes on without that ack, and a neighbour whose acks
  overran `OVERRUNS_TO_DROP` rounds running leaves the live set (a timely ack clears
  the count, a renewed handshake does not), so one slow ack never holds a round past
  its deadline and an honest slow link is not dropped for one late ack; once it is
  back, such a neighbour is on probation: the round waits for its ack only until its
  other work is done and `PROBATION_GRACE` s more (or one recent round, if longer),
  so re-joining buys no new full deadline;
- RESOURCE_EXHAUSTED (the receiver's push buffer is full, `busy`, or one of its own
  limits, `rate_limited`) is the receiver's load, never by itself a reason to drop it:
  the push is retried after `BUSY_BACKOFF` s (doubling, at most `BUSY_RETRIES` times)
  while the deadline allows, else skipped this round (counted `push_busy`);
- ABORTED (the receiver's own state moved on while the payload arrived or was
  checked, its `raced`) is the receiver's race, never by itself a reason to drop it:
  the round goes on without that delivery, not retried (its round or sequence has
  moved, so the same payload would race again; counted `push_raced`);
- a neighbour that refused a round as one it has completed (OUT_OF_RANGE, and its
  renewed handshake claims that round or later: this node is behind, e.g. a
  replacement that starts at round 0 beside a swarm far ahead) is pushed nothing more
  until this node's round passes its claimed or verified one (`held`): until a
  catch-up, every push would be refused, logged there and answered by a new
  handshake (~500 per replacement in `bench/bench_soak.py`);
- conversely, a neighbour that refused a round as too far ahead of its own (OUT_OF_RANGE,
  and its renewed handshake claims a round more than `MAX_ROUNDS_AHEAD` before it:
  it is behind, e.g. restarted from an old checkpoint) is pushed nothing more while
  each round would be as far ahead of its claimed and verified round (`held`): it
  catches up from a neighbour's state (Pull, `catchup`), and its next push or Hello
  says so; logged once and counted once (`push_held`) per time it falls behind, not
  every round. Both holds go by the neighbour's verified round of its current copy
  only (`Inbox.verified_round`): a restart of its id starts from what it claims then;
- a peer's free text (an ack's reason, a status's details) reaches the log escaped
  and bounded (`logs.safe_text`);
- a push's data chunks are small enough that each arrives within a quarter of
  `stream_idle_seconds` at the slowest pace receivers accept (`push_chunk_bytes`): a
  receiver sees a stream chunk by chunk, so a larger chunk on a slow link (one that
  slowed down mid-run) looked idle and was cut (`idle_stream`) though its bytes flowed;
- pushes that share a slow uplink go one at a time: when a round's pushes took more
  than `ONE_AT_A_TIME_ABOVE` of the time a receiver gives one of them (`PUSH_PACE`), the
  next rounds' pushes stream one after another, each at the whole uplink's rate (in
  parallel each got a share, and one could fall below the receivers' minimum and be
  cut, `slow_stream`); the round takes about as long, since the uplink is the limit.
  Once they take less than `IN_PARALLEL_BELOW` of it, they go in parallel again. A
  push holds its turn until it ends or for its share of the round's time, whichever
  comes first: a neighbour that holds its ack delays the others by that much at most,
  and in one round only: neighbours on probation go last, the others in the order of
  how long each one's last turn lasted, shortest first (a new one counts 0), so one
  slow to ack goes last and keeps no other push waiting. (A turn cannot end once the
  data is written: on a slow link the socket still holds most of the push then, and
  the next push would share it.)
  Until a round has measured the uplink, pushes go one at a time (the first round's
  are the largest risk: a slow link cut them all; on a fast one it costs milliseconds).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from declora.node import faults
from declora.node.daemon.auth import Auth
from declora.node.daemon.handshake import Handshaker
from declora.node.daemon.inbox import MAX_ROUNDS_AHEAD, PUSH_PACE
from declora.node.daemon.peers import Peer, PeerTable
from declora.node.daemon.state import Identity, Progress
from declora.node.daemon.status import Counters
from declora.node.dec_lora import DecLoraNode
from declora.node.logs import safe_text
from declora.node.metrics import NodeMetrics
from declora.node.settings import NodeSettings
from declora.node.wire import chunks, make_header
from declora.proto import pb

log = logging.getLogger(__name__)

OVERRUNS_TO_DROP = 2  # rounds running whose ack a neighbour did not send in time
BUSY_RETRIES, BUSY_BACKOFF = 2, 0.25  # a RESOURCE_EXHAUSTED push: retries, first wait (s)
REASON_CHARS = 200  # of a peer's free text in a log line
PROBATION_GRACE = 1.0  # s a neighbour on probation may take beyond the round's other work
MIN_CHUNK = 4 * 1024  # bytes: the smallest data chunk a push uses
# of the time a receiver gives one push (`PUSH_PACE`): a round's pushes that took longer
# go one at a time from the next round on, and in parallel again below the other
ONE_AT_A_TIME_ABOVE, IN_PARALLEL_BELOW = 0.5, 0.25


@dataclass(frozen=True)
class RoundPayload:
    """What one exchange sends every live neighbour: round `r`'s `message` (CRC `crc`),
    the adapter part then `tracker_bytes` of z, with this node's live `degree`, every
    push ended by `deadline` (monotonic seconds)."""

    r: int
    message: bytes
    degree: int
    crc: int
    tracker_bytes: int
    deadline: float


def push_chunk_bytes(settings: NodeSettings) -> int:
    """A push's data chunk size: `--chunk-kib`, but at most what arrives in a quarter
    of `--stream-idle-seconds` at `PUSH_PACE` (the slowest receivers accept; 80 KiB at
    the defaults), at least `MIN_CHUNK`."""
    paced = int(PUSH_PACE.bytes_per_second * settings.stream_idle_seconds / 4)
    return min(settings.chunk_kib * 1024, max(MIN_CHUNK, paced))


class PushOverdue(Exception):
    """The round's deadline came before the push's ack."""


class Sender:
    """Pushes of one node's round payloads, each bounded by the round's deadline."""

    def __init__(
        self,
        settings: NodeSettings,
        identity: Identity,
        node: DecLoraNode[str],
        progress: Progress,
        peers: PeerTable,
        handshaker: Handshaker,
        auth: Auth,
        counters: Counters,
        metrics: NodeMetrics,
        verified_round: Callable[[Peer], int],
    ) -> None:
        self.settings = settings
        self.me = identity
        self.node = node
        self.progress = progress
        self.peers = peers
        self.handshaker = handshaker
        self.auth = auth
        self.counters = counters
        self.metrics = metrics
        self.overruns: dict[str, int] = {}  # node id -> rounds running its ack came late
        self.ahead: set[str] = set()  # node ids that refused a round they had completed
        self.lagging: set[str] = set()  # node ids that refused a round as too far ahead
        # what a neighbour has completed by its validated payloads, on its current copy
        # (the inbox's `verified_round`)
        self.verified_round = verified_round
        self.turn_seconds: dict[str, float] = {}  # node id -> how long its last turn lasted
        self.one_at_a_time = True  # the uplink is slow, or not measured yet: one by one
        self.measured = False  # a round's pushes measured the uplink (`_choose_order`)
        self._turn: asyncio.Lock | None = None  # held by the push streaming (one at a time)
        self._share = 0.0  # s one push may hold the turn: its share of the round
        self._largest = 0  # bytes of the round's largest push

    def on_probation(self, peer: Peer) -> bool:
        """Whether `peer` was dropped for late acks and has not acked in time since."""
        return self.overruns.get(peer.node_id, 0) >= OVERRUNS_TO_DROP

    async def send_round(
        self, live: list[Peer], out: RoundPayload
    ) -> dict[asyncio.Task[None], Peer]:
        """Push the round's payload `out` to each of `live` at once; by its deadline
        every push has ended (those still waiting for an ack are cancelled), but those
        to neighbours on probation, returned for `settle`."""
        for pid in [pid for pid in self.overruns if self.peers.get(pid) is None]:
            del self.overruns[pid]
        self.ahead = {pid for pid in self.ahead if self.peers.get(pid) is not None}
        self.lagging = {pid for pid in self.lagging if self.peers.get(pid) is not None}
        live = [p for p in live if not self.held(p, out.r)]
        for pid in [pid for pid in self.turn_seconds if self.peers.get(pid) is None]:
            del self.turn_seconds[pid]
        self._turn = asyncio.Lock() if self.one_at_a_time else None
        self._share = (out.deadline - time.monotonic()) / max(len(live), 1)
        self._largest = 0
        started = time.monotonic()
        # the turns go in the order the pushes begin (`asyncio.Lock` is FIFO): those on
        # probation (late acks) last, then the shortest last turn first
        live = sorted(
            live, key=lambda p: (self.on_probation(p), self.turn_seconds.get(p.node_id, 0.0))
        )
        tasks = {asyncio.create_task(self.push(p, out)): p for p in live}
        held = {t: p for t, p in tasks.items() if not self.on_probation(p)}
        await self.settle(held, out.r, out.deadline)
        self._choose_order(len(held), time.monotonic() - started)
        return {t: p for t, p in tasks.items() if t not in held}

    def _choose_order(self, pushes: int, took: float) -> None:
        """The round's `pushes` all ended `took` s after the first began: about what each
        takes in parallel (the uplink is shared), so compare it with what a receiver
        gives one push, and go one at a time, or in parallel again (see the module)."""
        if pushes < 2 or not self._largest:
            return
        allowed = PUSH_PACE.seconds(self._largest)
        if self.one_at_a_time:
            serial = took >= IN_PARALLEL_BELOW * allowed
        else:
            serial = took > ONE_AT_A_TIME_ABOVE * allowed
        said = self.measured  # the first measurement says a slow uplink only
        self.measured = True
        if serial == self.one_at_a_time and said:
            return
        self.one_at_a_time = serial
        if serial:
            log.info(
                "the uplink is slow (%d pushes took %.1fs, a receiver allows one %.0fs): "
                "pushing to neighbours one at a time",
                pushes,
                took,
                allowed,
            )
        elif said:
            log.info(
                "the uplink keeps up (%d pushes took %.1fs): pushing in parallel", pushes, took
            )

    async def settle(self, tasks: dict[asyncio.Task[None], Peer], r: int, until: float) -> None:
        """Wait for the pushes `tasks` until `until` (monotonic time); those still
        waiting for an ack then are cancelled, and count as overruns."""
        if not tasks:
            return
        pending = set(tasks)
        try:
            _, pending = await asyncio.wait(tasks, timeout=max(until - time.monotonic(), 0))
        finally:  # also when the round itself is cancelled (the node stops)
            for task in pending:
                task.cancel()
        if pending:
            await asyncio.wait(pending)
        for task in pending:
            if task.cancelled():  # else it ended (and counted itself) meanwhile
                self.overran(tasks[task], r)

    def overran(self, peer: Peer, r: int) -> None:
        """`peer`'s ack for round `r` did not come by the deadline: count it; drop the
        peer when its acks overran `OVERRUNS_TO_DROP` rounds running."""
        self.counters.count("push_timeout")
        n = self.overruns[peer.node_id] = self.overruns.get(peer.node_id, 0) + 1
        if n >= OVERRUNS_TO_DROP:
            self.peers.drop(peer, f"no ack for its push within the round deadline in {n} rounds")
        else:
            log.info("%s sent no ack for round %d within the deadline", peer.node_id, r)

    def _header(
        self, peer: Peer, out: RoundPayload, kind: int, data: bytes, crc: int | None
    ) -> pb.PayloadHeader:
        header = make_header(
            session=peer.token_out,
            receiver_id=peer.node_id,
            tracker_bytes=out.tracker_bytes,
            crc32=crc,
            sender_id=self.me.node_id,
            swarm_id=self.me.swarm_id,
            fingerprint=self.me.fingerprint,
            round=out.r,
            sender_degree=out.degree,
            kind=kind,
            codec=self.me.codec if kind == pb.PAYLOAD_KIND_DELTA else "fp32",
            seq=self.progress.seq,
            data=data,
            schema=self.me.schema,
        )
        return self.auth.sign_payload(header, data)

    async def push_one(
        self, peer: Peer, out: RoundPayload, kind: int, data: bytes, crc: int | None
    ) -> pb.PushAck:
        """Stream `data` (`kind`: the round's delta or a keyframe, then the round's
        tracker bytes of z) to `peer`; a RESOURCE_EXHAUSTED answer is retried with
        backoff while the round's deadline allows."""
        deadline = out.deadline
        wait = BUSY_BACKOFF
        for attempt in range(BUSY_RETRIES + 1):
            left = deadline - time.monotonic()
            if left <= 0:
                raise PushOverdue
            header = self._header(peer, out, kind, data, crc)
            stream: Any = chunks(header, data, push_chunk_bytes(self.settings))
            if faults.armed("mid_stream"):
                stream = _crash_mid_stream(stream)
            self._largest = max(self._largest, len(data))
            started = time.monotonic()
            try:
                async with _Turn(self._turn, self._share):
                    began = time.monotonic()  # its turn came
                    left = deadline - began
                    if left <= 0:
                        raise PushOverdue
                    try:
                        ack: pb.PushAck = await self.peers.stub(peer).Push(stream, timeout=left)
                    finally:  # also when cut at the deadline: a long turn
                        self.turn_seconds[peer.node_id] = time.monotonic() - began
            except grpc.aio.AioRpcError as exc:
                busy = exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                now = time.monotonic()
                # a retry needs the backoff and as long again as this attempt took: one
                # that could not finish would count as a late ack (busy never drops)
                if not busy or attempt == BUSY_RETRIES or deadline - now < wait + (now - started):
                    raise
                await asyncio.sleep(wait)
                wait *= 2
                continue
            if ack.accepted:
                peer.bytes_sent += len(data)
                self.node.bytes_sent += len(data)
                self.metrics.bytes_sent.inc(len(data))
            return ack
        raise AssertionError("unreachable")  # pragma: no cover

    def held(self, peer: Peer, r: int) -> bool:
        """Whether round `r` is not pushed to `peer`: it refused a round it had completed
        and has completed `r` too, or it refused a round as too far ahead and `r` is
        more than `MAX_ROUNDS_AHEAD` past what it has completed, by its claim or
        verified round (either way it would refuse `r`). Once neither holds, it is
        pushed again."""
        known = max(self.verified_round(peer), peer.claimed_round)
        pid = peer.node_id
        if pid in self.ahead and known < r:
            self.ahead.discard(pid)
        if pid in self.lagging and r <= known + MAX_ROUNDS_AHEAD:
            self.lagging.discard(pid)
            log.info("%s has caught up (round %d): pushing to it again", pid, known)
        return pid in self.ahead or pid in self.lagging

    def _refused_out_of_range(self, peer: Peer, r: int) -> None:
        """`peer` refused round `r` as out of range and its renewed handshake gave its
        claim: hold the pushes it would refuse (`held`)."""
        if peer.claimed_round >= r:
            self.ahead.add(peer.node_id)  # this node is behind it
        elif r > peer.claimed_round + MAX_ROUNDS_AHEAD and peer.node_id not in self.lagging:
            self.lagging.add(peer.node_id)  # it is behind this node
            self.counters.count("push_held")
            log.info(
                "%s is at round %d, more than %d rounds behind round %d: not pushed to until "
                "it catches up (from a neighbour's state)",
                peer.node_id,
                peer.claimed_round,
                MAX_ROUNDS_AHEAD,
                r,
            )

    async def push(self, peer: Peer, out: RoundPayload, retry: bool = True) -> None:
        """Send the round's payload `out` to `peer`: the adapter delta, then the
        exchange's z (gradient tracking). A keyframe replaces the delta when the
        neighbour is out of step.

        A refusal for being out of range or unknown renews the handshake instead of
        dropping the neighbour: the renewed round aligns the two at the next round
        start (`align_round`), and an unknown sender (the receiver restarted, or has
        not finished its side of the handshake) retries once. RESOURCE_EXHAUSTED and
        ABORTED skip the neighbour this round; a timeout counts as an overrun (`overran`).
        Nothing is pushed to a neighbour whose pushes are `held`.
        """
        r, t = out.r, out.tracker_bytes
        if self.held(peer, r):  # one that joined the round meanwhile (`Exchange`)
            return
        try:
            if not peer.send_keyframe:
                delta = pb.PAYLOAD_KIND_DELTA
                ack = await self.push_one(peer, out, delta, out.message, out.crc)
                if ack.accepted or not ack.need_keyframe:
                    if not ack.accepted:
                        why = safe_text(ack.reason, REASON_CHARS)
                        log.info("%s refused round %d: %s", peer.node_id, r, why)
                    self.overruns.pop(peer.node_id, None)
                    return
            keyframe = self.node.keyframe() + out.message[len(out.message) - t :]
            ack = await self.push_one(peer, out, pb.PAYLOAD_KIND_KEYFRAME, keyframe, None)
            self.counters.keyframes_sent += 1
            self.overruns.pop(peer.node_id, None)
            peer.send_keyframe = not ack.accepted
            if not ack.accepted:
                why = safe_text(ack.reason, REASON_CHARS)
                log.info("%s refused a keyframe: %s", peer.node_id, why)
        except PushOverdue:
            self.overran(peer, r)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            details = safe_text(exc.details() or "", REASON_CHARS)
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                self.overran(peer, r)
                return
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED:  # its load: skip this round
                self.counters.count("push_busy")
                log.info("%s is busy, round %d not sent: %s", peer.node_id, r, details)
                return
            if code == grpc.StatusCode.ABORTED:  # its race: skip this round
                self.counters.count("push_raced")
                log.info("%s raced, round %d not delivered: %s", peer.node_id, r, details)
                return
            renew = code in (grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.UNAUTHENTICATED)
            stopping = self.progress.stop_requested
            if renew and not stopping and await self.handshaker.dial(peer.address) is not None:
                log.info("%s refused round %d (%s): handshake renewed", peer.node_id, r, code.name)
                if code == grpc.StatusCode.OUT_OF_RANGE:
                    self._refused_out_of_range(peer, r)
                if code == grpc.StatusCode.UNAUTHENTICATED and retry:
                    await self.push(peer, out, retry=False)
                return
            self.peers.drop(peer, f"push failed: {code.name} {details}".strip())
        except Exception:  # one neighbour's failure never takes the node down
            log.exception("push to %s failed unexpectedly", peer.node_id)
            self.peers.drop(peer, "push failed unexpectedly (traceback above)")


class _Turn:
    """One push's turn on a shared uplink (`lock`; None: no turns, pushes in parallel):
    it ends when the push ends or after `share` s, whichever comes first, so a neighbour
    that holds its ack (or reads at a trickle) delays the others by its share at most."""

    def __init__(self, lock: asyncio.Lock | None, share: float) -> None:
        self.lock = lock
        self.share = share
        self.timer: asyncio.TimerHandle | None = None

    async def __aenter__(self) -> None:
        if self.lock is not None:
            await self.lock.acquire()
            self.timer = asyncio.get_running_loop().call_later(self.share, self.end)

    async def __aexit__(self, *exc: object) -> None:
        self.end()

    def end(self) -> None:
        if self.timer is not None and self.lock is not None:
            self.timer.cancel()
            self.timer = None
            self.lock.release()


async def _crash_mid_stream(stream: Iterator[pb.Chunk]) -> AsyncIterator[pb.Chunk]:
    """Pass the header and first data chunk, give them time to leave, then crash."""
    for i, chunk in enumerate(stream):
        if i == 2:
            await asyncio.sleep(0.3)
            faults.crash_point("mid_stream")
        yield chunk
