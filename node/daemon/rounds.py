"""The train loop of a running node: rounds, the consensus finish, evaluation.

Invariants callers may rely on:
- a round is: (when far behind) a catch-up, alignment, K local steps, one exchange;
  a catch-up or alignment that brings the node to the end of its training rounds
  (or of the finish, `StateTransfer.planned_end`) ends the round there, with no
  exchange (`run_round` gives None), and that loop ends;
- with `gossip_steps` G > 1 the round number (`progress.round`: messages,
  checkpoints, catch-up, status) counts exchanges: exchange e trains only when
  `schedule.is_training_exchange(e, G)` (e = 1, G + 1, 2G + 1, ...), at training
  round `schedule.training_round(e, G)` (the lr schedule and Kill-and-Revive's revives
  go by it); the other exchanges only mix (with tracking, z is mixed in every exchange
  of the round: `tracking.py`), as in the simulator.
  A node that resumed or caught up mid-group simply goes on with its exchange number;
- `rounds` counts training rounds: the train loop ends at exchange `rounds` x G;
- if training goes non-finite the node rolls back to the state before the round's
  steps (adapter, public copy, correction, optimizer) and drops the neighbours whose
  payloads its last mix used; it never exits because of what a peer sent;
- after the last training round, gossip-only rounds run until every live neighbour
  is within `consensus_tol`, at most up to round `rounds` x G + `consensus_rounds`
  (a node resumed within the finish runs only what is left of it; none of it when
  no neighbour is live: `Daemon._bootstrap` lets such a node start alone only when
  nothing listens at any missing neighbour's address), then a final evaluation;
- isolation pacing (`Isolation`): in the training phase, a node that wants neighbours
  (`wanted_peers` > 0, i.e. not --solo nor --min-peers 0) and has none live waits for
  one before each exchange, up to that round's deadline (`Exchange.deadline_seconds`),
  going on as soon as one is live; with none by then the exchange runs alone. So a
  cut-off node advances at most one exchange per deadline and falls behind instead of
  racing ahead (on re-join it is the one that aligns or catches up). When every known
  peer has finished (`PeerTable.all_finished`: its leave notice came after this node's
  last training exchange, also while a wait is under way, or without a notice its
  last handshake claimed that round: a lost goodbye) it trains alone at full speed.
  A stop during the wait stops at once (no round is in progress); one warning when
  the waits begin, one line when they end;
- a round is in progress (`Progress.in_round`: a polite stop lets it train and mix)
  from its start, catch-up and alignment included, until its mix; a polite stop asked
  for between rounds (a record, a checkpoint) stops before the next round starts;
- every completed round is appended to the history (phase "train", or "gossip" for
  an exchange that only mixed); `eval_every` and `checkpoint_every` count training
  rounds: evaluation and checkpoints come after the last exchange of every N-th
  training round, i.e. at exchanges that are multiples of N x G (`persistence`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable

import grpc
import numpy as np

from declora.node import logs
from declora.node.daemon.catchup import CATCH_UP_MAX_WAIT
from declora.node.daemon.parts import Parts
from declora.node.daemon.persistence import Persistence
from declora.node.daemon.state import NodeState
from declora.node.dec_lora import TrainerSnapshot
from declora.node.gossip import GossipError
from declora.node.metrics import NodeMetrics
from declora.node.schedule import is_training_exchange, training_round
from declora.node.wire import WireError

log = logging.getLogger(__name__)

CATCH_UP_EVERY = 10.0  # seconds between catch-up attempts of a node far behind...
# ...doubling after each failed one up to CATCH_UP_MAX_WAIT (catchup's: it paces skips too)
ISOLATION_POLL = 0.25  # seconds between checks of a wait for a neighbour (and a stop)


class Isolation:
    """Isolation pacing: before a training exchange with no live neighbour, wait for
    one up to the round's deadline (see the module's invariants)."""

    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self.alone_since: float | None = None  # monotonic: when the waits began
        self.said_finished = False  # "every neighbour finished" was logged

    def needed(self) -> bool:
        """Whether the next training exchange waits: this node wants neighbours, none
        is live, and not every known peer has finished."""
        parts = self.parts
        if parts.settings.wanted_peers <= 0 or parts.peers.live:
            return False
        if parts.peers.all_finished():
            if not self.said_finished:
                self.said_finished, self.alone_since = True, None
                log.warning(
                    "every neighbour has finished (left after, or claimed, round %d or later): "
                    "training alone at full speed",
                    parts.peers.finish_round,
                )
            return False
        return True

    async def wait(self) -> None:
        """Wait for a live neighbour while `needed`, up to the round's deadline; returns
        at once when one is live, every known peer has finished, or a stop comes (a
        stop asked for after the round in progress stops now: none is)."""
        parts, progress = self.parts, self.parts.progress
        if self.needed():
            seconds = parts.exchange.deadline_seconds()
            if self.alone_since is None:
                self.alone_since = time.monotonic()
                self.said_finished = False
                log.warning(
                    "no live neighbour: each round waits up to %.0fs for one before "
                    "training alone (--min-peers 0: never wait)",
                    seconds,
                )
            end = time.monotonic() + seconds
            progress.state = NodeState.WAITING  # `status` shows it; not in a round
            while self.needed():  # a leave notice may say meanwhile that all finished
                left = end - time.monotonic()
                if progress.stopping() or left <= 0:
                    return
                progress.arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(progress.arrived.wait(), min(left, ISOLATION_POLL))
        live = parts.peers.live
        if self.alone_since is not None and live:
            log.info(
                "%s live after %.0fs without a neighbour: rounds no longer wait",
                ", ".join(p.node_id for p in live),
                time.monotonic() - self.alone_since,
            )
            self.alone_since = None


class RoundLoop:
    """Runs a built node's rounds."""

    def __init__(self, parts: Parts, store: Persistence, metrics: NodeMetrics) -> None:
        self.parts = parts
        self.store = store
        self.metrics = metrics
        self.settings = parts.settings
        self.progress = parts.progress
        self.report = parts.report
        self.clock: Callable[[], float] = time.monotonic  # of the catch-ups' timing
        self.next_catch_up = 0.0  # `clock` time a node far behind may try again
        self.catch_up_wait = CATCH_UP_EVERY  # ...after this many seconds
        # sources of the catch-ups that took a state within the last CATCH_UP_MAX_WAIT
        # seconds: node id -> `clock` time it ended (at most one per CATCH_UP_EVERY)
        self.caught_up_from: dict[str, float] = {}
        self.evaluated: bytes | None = None  # a digest of the adapter evaluated last
        self.isolation = Isolation(parts)
        parts.transfer.round_seconds = parts.exchange.deadline_seconds  # paces lone skips
        parts.exchange.skip_limit = parts.transfer.lone_skip_limit  # alignments too

    async def catch_up(self) -> None:
        """Take an advanced neighbour's state (`catchup`), then wait before the next
        attempt: CATCH_UP_EVERY seconds after a good catch-up, twice the last wait (up
        to CATCH_UP_MAX_WAIT) after any other, counted from its end. A good catch-up
        took a state quickly (`StateTransfer.quick_seconds`: max(5 s, the state's size
        at `catchup.CATCH_UP_QUICK`'s 1 MiB/s), at most half the pull's timeout), from
        a source this node has not
        taken one from in the last CATCH_UP_MAX_WAIT seconds; a failed one (a refused
        state, counted by reason, or a timeout: this node keeps its own), a slow one
        or a repeat from the same source backs off. So a source that trickles its
        state (cut at `catchup.STATE_PACE`), or serves it slowly but in time, or
        claims to be far ahead again right after being caught up from, costs this node
        one pull per wait, not one per round; the first catch-up (a start, a healed
        partition) is never delayed. A catch-up that backs off logs every reason (slow,
        repeat). Times are `clock`'s (tests inject one)."""
        parts = self.parts
        start = self.clock()
        try:
            source = await parts.transfer.catch_up()
            if source is None:
                return  # nobody ahead: nothing tried, nothing to wait for
        except (WireError, GossipError, grpc.aio.AioRpcError) as exc:
            if isinstance(exc, WireError):
                why = exc.reason
                parts.counters.count(exc.counter)
            elif isinstance(exc, grpc.aio.AioRpcError):
                why = f"{exc.code().name} {exc.details() or ''}".strip()
            else:
                why = str(exc)
                parts.counters.count("bad_values")  # as a push's values are (inbox)
            log.warning(  # the reason may quote what the peer sent: escaped, bounded
                "could not take a neighbour's state (%s): going on from our own",
                logs.safe_text(why, 500),
            )
            good = False
        else:
            end = self.clock()
            recent = {k: t for k, t in self.caught_up_from.items() if end - t < CATCH_UP_MAX_WAIT}
            repeat = source.node_id in recent
            quick = parts.transfer.quick_seconds()
            slow = end - start > quick
            recent[source.node_id] = end
            self.caught_up_from = recent
            good = not (slow or repeat)
            if not good:
                reasons = [f"over the {quick:.1f}s its size allows"] if slow else []
                if repeat:
                    reasons.append(f"within {CATCH_UP_MAX_WAIT:g}s of the last one from it")
                log.warning(
                    "took %s's state in %.1fs, %s: the next catch-up waits longer",
                    source.node_id,
                    end - start,
                    " and ".join(reasons),
                )
        if good:
            self.catch_up_wait = CATCH_UP_EVERY
        else:
            self.catch_up_wait = min(2 * self.catch_up_wait, CATCH_UP_MAX_WAIT)
        self.next_catch_up = self.clock() + self.catch_up_wait  # from its end

    def align(self) -> None:
        """Skip ahead to a live neighbour's validated round (`Exchange.align_round`) at
        the pace of every skip one claim decides (`StateTransfer.lone_skip_limit`): an
        alignment and a catch-up share it, so one member alone cannot add the two."""
        transfer = self.parts.transfer
        if self.parts.exchange.align_round():
            transfer.skipped_at = transfer.clock()

    async def run_round(self, train: bool) -> bool | None:
        """One exchange and mix, after K local steps when `train` is true and the
        exchange number says so (`is_training_exchange`); false: gossip only (the
        consensus finish). Whether it trained; None when a catch-up or alignment
        brought the node to the end of its training (`train`) or of the finish
        (`StateTransfer.planned_end`): no exchange ran and the round is not recorded."""
        parts = self.parts
        progress, report, metrics = self.progress, self.report, self.metrics
        # in a round from here (not `waiting`): a stop lets it train and mix first
        progress.state = NodeState.TRAINING if train else NodeState.EXCHANGING
        # (a skip one unchecked claim decides, too soon for a round: nothing to try)
        skip_due = parts.transfer.lone_skip_limit() != 0
        if parts.transfer.far_behind() and self.clock() >= self.next_catch_up and skip_due:
            target = parts.transfer.catch_up_target()
            log.warning(
                "neighbours are at round %d: skipping ahead from %d",
                target[1] if target else -1,
                progress.round,
            )
            await self.catch_up()
        self.align()
        end, what = parts.transfer.planned_end(), "the planned end of this node's rounds"
        if train and self.settings.rounds:
            end, what = self.settings.rounds * self.settings.exchanges_per_round, "its training"
        if progress.round >= end:
            log.warning(
                "at round %d, the end of %s (%d): no further exchange", progress.round, what, end
            )
            return None
        r = progress.round + 1
        logs.set_round(r)
        t0 = time.perf_counter()
        per_round = self.settings.exchanges_per_round
        mixing_only = train and not is_training_exchange(r, per_round)  # within a round
        train = train and not mixing_only
        if train:
            progress.state = NodeState.TRAINING
            good = TrainerSnapshot.of(parts.node)
            async with parts.transfer.stepping():  # a Pull serves the state before
                report.loss = await asyncio.to_thread(
                    parts.node.train,
                    self.settings.local_steps,
                    lambda: progress.stop_requested,
                    training_round(r, per_round),
                )
            if not (np.isfinite(report.loss) and parts.node.is_finite()):
                self._roll_back(good)
            metrics.loss.set(report.loss)
        progress.state = NodeState.EXCHANGING
        await parts.exchange.exchange(r)
        progress.completed(r)
        report.last_round_seconds = time.perf_counter() - t0
        # the deadline follows rounds that train (or the finish's) and mixed with someone:
        # a round alone takes no network time, and a run of them (every neighbour out)
        # would pull the deadline below what the links need when they come back
        if not mixing_only and parts.exchange.last_contributors:
            parts.exchange.observe_round(report.last_round_seconds)
        metrics.rounds.inc()
        metrics.round.set(r)
        metrics.round_seconds.observe(report.last_round_seconds)
        log.info(
            "round %d done in %.2fs: loss %.4f, mixed with %d neighbours, self weight %.3f",
            r,
            report.last_round_seconds,
            report.loss,
            len(parts.exchange.last_contributors),  # not the live set: one may leave after
            report.self_weight,
        )
        return train

    def _roll_back(self, good: TrainerSnapshot) -> None:
        """Training went non-finite: back to the state before it, and drop the
        neighbours whose payloads the last mix used (the likely cause)."""
        parts = self.parts
        good.restore(parts.node)
        suspects = [p for p in parts.exchange.last_contributors if parts.peers.get(p)]
        log.error(
            "training gave non-finite values: rolled back to the last good state and dropped %s",
            ", ".join(suspects) or "no neighbour",
        )
        for pid in suspects:
            parts.peers.drop(parts.peers.peers[pid], "training on its payload went non-finite")
        self.report.loss = float("nan")

    async def train_loop(self) -> None:
        """Training rounds (`rounds` of them: `rounds` x G exchanges; 0 = until
        stopped), each exchange paced by `Isolation`, then the consensus finish and
        the final evaluation."""
        s, progress, parts = self.settings, self.progress, self.parts
        per_round = s.exchanges_per_round
        last = s.rounds * per_round
        while not progress.stopping() and (s.rounds == 0 or progress.round < last):
            await self.isolation.wait()
            if progress.stop_requested:
                break
            trained = await self.run_round(train=True)
            if trained is None:  # caught up to the end of training: on to the finish
                break
            evaluated = bool(s.eval_every and progress.round % (s.eval_every * per_round) == 0)
            if evaluated:
                await self.evaluate()
            self.store.record("train" if trained else "gossip", evaluated)
            if progress.round % (s.checkpoint_every * per_round) == 0:
                await asyncio.to_thread(self.store.save_checkpoint)
        if progress.stopping():
            return
        progress.state = NodeState.CONSENSUS
        parts.node.begin_finish()
        while progress.round < last + s.consensus_rounds:  # a resume runs what is left
            live = [p.node_id for p in parts.peers.live]
            if progress.stopping() or not live:
                break
            if parts.node.disagreement(live) <= s.consensus_tol:
                break
            if await self.run_round(train=False) is None:
                break
            self.store.record("consensus", False)
        else:  # the finish ran out of rounds: say so when the nodes still disagree
            self.warn_unfinished()
        await self.evaluate(final=True)
        self.store.record("final", True)
        progress.state = NodeState.DONE

    def warn_unfinished(self) -> None:
        """One warning when a consensus finish (`consensus_rounds` > 0) ended at its
        last round with this node's `disagreement` with its live neighbours above
        `consensus_tol`: the swarm's nodes end with models that differ."""
        s, parts = self.settings, self.parts
        live = [p.node_id for p in parts.peers.live]
        if not s.consensus_rounds or not live:
            return
        gap = parts.node.disagreement(live)
        if gap > s.consensus_tol:
            longer = ", longer --deca-block-rounds" if s.method == "deca" else ""
            log.warning(
                "the consensus finish stopped at --consensus-rounds %d with this node %.2e "
                "from its neighbours, above --consensus-tol %g: the nodes do not agree "
                "(give more --consensus-rounds%s, or a finer --codec)",
                s.consensus_rounds, gap, s.consensus_tol, longer,
            )  # fmt: skip

    async def evaluate(self, *, final: bool = False) -> None:
        """Evaluate the adapter on the test set (when there is one) and log the result;
        the `final` evaluation skips an adapter equal to the one evaluated last (its
        result stands: a run whose last round evaluated logs no second line)."""
        parts = self.parts
        if parts.test is None:
            return
        vec = parts.node.model_vector()
        digest = hashlib.blake2b(np.ascontiguousarray(vec).data, digest_size=16).digest()
        if final and digest == self.evaluated:
            return
        self.evaluated = digest
        self.progress.state = NodeState.EVALUATING
        self.report.last_eval = await asyncio.to_thread(parts.lm.evaluate, vec, parts.test)
        if "accuracy" in self.report.last_eval:
            self.metrics.accuracy.set(self.report.last_eval["accuracy"])
        log.info("eval %s", {k: round(v, 4) for k, v in self.report.last_eval.items()})
